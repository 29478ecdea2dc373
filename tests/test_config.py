"""Study configuration: the shipped studies load; invalid files name the file and the field."""

from __future__ import annotations

import tomllib
from pathlib import Path

import pytest
from typer.testing import CliRunner

from talik.cli import app
from talik.config import config_digest, defaults_toml, load_study, to_toml
from talik.errors import ConfigError

REPO = Path(__file__).resolve().parent.parent


@pytest.mark.parametrize("name", ["demo.toml", "datong.toml"])
def test_shipped_studies_load(name):
    cfg = load_study(REPO / "studies" / name)
    assert cfg.sentinel1.coherence_threshold == 0.3
    assert cfg.sentinel1.gamma == 1e-4
    assert cfg.sentinel1.loop_closure_rms_rad == 1.5
    assert cfg.recession.min_recession_days == 7
    assert cfg.recession.months == [8, 9, 10]
    assert cfg.attribution.before_end == 2002
    # Table 1 of the paper.
    assert cfg.sensors["alos2"].wavelength_m == pytest.approx(0.2419)
    assert cfg.sensors["ers2"].incidence_deg == pytest.approx(23.14)
    assert cfg.sensors["alos1"].direction == "ascending"
    # Relative paths are resolved against the study file's folder.
    assert cfg.stores.work_dir.is_absolute()
    assert str(cfg.stores.work_dir).startswith(str(REPO))


def test_datong_has_the_papers_basin():
    cfg = load_study(REPO / "studies" / "datong.toml")
    assert cfg.aoi.area_km2 == pytest.approx(4576)
    west, south, east, north = cfg.aoi.bbox
    assert west < 99.6344 < east and south < 38.0363 < north  # the Fig. 3c site
    assert {p.sensor for p in cfg.periods} == {"ers2", "envisat", "alos1", "sentinel1", "alos2"}


def _bad(tmp_path: Path, old: str, new: str) -> Path:
    text = (REPO / "studies" / "demo.toml").read_text()
    assert old in text
    path = tmp_path / "bad.toml"
    path.write_text(text.replace(old, new, 1).replace('"../data', f'"{REPO}/data'))
    return path


@pytest.mark.parametrize(
    ("old", "new", "field", "expected"),
    [
        ("coherence_threshold = 0.3", "coherence_threshold = 1.5", "sentinel1.coherence_threshold",
         "<= 1"),
        ("gamma = 1e-4", "gama = 1e-4", "sentinel1.gama", "no such field"),
        ('constraint = "linear_periodic"', 'constraint = "quadratic"', "sentinel1.constraint",
         "one of"),
        ("months = [8, 9, 10]", "months = [8, 9, 13]", "recession", "1–12"),
        ('kind = "world"', 'kind = "ftp"', "source", "'world', 'local'"),
    ],
)
def test_invalid_values_name_file_field_and_expectation(tmp_path, old, new, field, expected):
    path = _bad(tmp_path, old, new)
    with pytest.raises(ConfigError) as err:
        load_study(path)
    message = str(err.value)
    assert str(path) in message
    assert field in message
    assert expected in message


def test_missing_required_field(tmp_path):
    path = _bad(tmp_path, 'raw_dir = "../data/demo/raw"\n', "")
    with pytest.raises(ConfigError, match=r"source\.world\.raw_dir: expected this field to be present"):
        load_study(path)


def test_syntax_error_and_missing_file(tmp_path):
    bad = tmp_path / "broken.toml"
    bad.write_text("name = \n")
    with pytest.raises(ConfigError, match="valid TOML"):
        load_study(bad)
    with pytest.raises(ConfigError, match="an existing study TOML file"):
        load_study(tmp_path / "nope.toml")


def test_resolved_config_round_trips_and_digest_is_stable():
    cfg = load_study(REPO / "studies" / "demo.toml")
    again = tomllib.loads(to_toml(cfg))
    assert again["sentinel1"]["gamma"] == 1e-4
    assert config_digest(cfg) == config_digest(load_study(REPO / "studies" / "demo.toml"))


def test_defaults_are_valid_commented_toml():
    text = defaults_toml()
    parsed = tomllib.loads(text)
    assert parsed["sentinel1"]["loop_closure_rms_rad"] == 1.5
    assert "# Pixels with coherence below this are masked (0–1)." in text


def test_cli_config_show_and_error(tmp_path):
    runner = CliRunner()
    ok = runner.invoke(app, ["config", "show", str(REPO / "studies" / "datong.toml")])
    assert ok.exit_code == 0, ok.output
    assert "Garide" in ok.output and "gamma = 0.0001" in ok.output
    bad = _bad(tmp_path, "gamma = 1e-4", "gamma = -1")
    res = runner.invoke(app, ["config", "show", str(bad)])
    assert res.exit_code == 2
    assert "sentinel1.gamma" in res.output


def test_defaults_toml_lists_the_ingest_sections_and_validates():
    """`talik config defaults` covers [ingest.*] too, and what it prints is a valid [ingest]."""
    import tomllib

    from talik.config import IngestOptions, defaults_toml

    text = defaults_toml()
    for section in ("ingest.asf", "ingest.hyp3", "ingest.cds", "ingest.earthengine", "ingest.esa"):
        assert f"[{section}]" in text
    parsed = IngestOptions.model_validate(tomllib.loads(text)["ingest"])
    assert parsed == IngestOptions() and not parsed.any_enabled


def test_service_urls_with_credentials_are_refused():
    """Study files and flow parameters are stored as text: a URL may not carry a credential."""
    import pytest
    from pydantic import ValidationError

    from talik.config import CdsOptions, Hyp3Options

    for bad in ("https://user:secret@hyp3-api.asf.alaska.edu", "https://h.example/api?token=abc"):
        with pytest.raises(ValidationError, match="must not carry credentials"):
            Hyp3Options(api_url=bad)
    assert CdsOptions(url="http://127.0.0.1:8080/api").url.endswith("/api")


def test_a_world_whose_discharge_starts_too_late_for_its_climate_reference_is_refused(tmp_path):
    # A record starting in 2000 scored the yearly recession constants against 3 years of
    # climate: negative constants and negative discharge were written without a word.
    from talik.config import WorldSource

    with pytest.raises(ValueError, match="hydro_start_year must be 1993 or earlier"):
        WorldSource(raw_dir=tmp_path, hydro_start_year=2000, hydro_end_year=2012)
    WorldSource(raw_dir=tmp_path, hydro_start_year=1993, hydro_end_year=2012)
