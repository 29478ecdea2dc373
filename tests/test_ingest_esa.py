"""ESA scene discovery against loopback catalogues in their real wire formats.

* Copernicus Data Space OData (eodag ``cop_dataspace``, ODataV4Search): two pages via
  ``@odata.nextLink`` / ``$skip``.
* A STAC API added with ``add_provider`` serving an ERS-2 SAR_IMS_1P item (and its asset).
* A DHuS mirror (sentinelsat): OpenSearch JSON search with paging, OData v2 product
  metadata, ``$value`` download with its MD5 checked.
* Error paths: a 503 that recovers, a 429 whose Retry-After is honoured, 401s that fail fast
  naming the credential variables, a 400 naming the setting.

Fake credentials are set in the environment; none may show in logs, the ledger or messages.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import json
import os
import time
from pathlib import Path
from urllib.parse import urlencode

import pytest
from werkzeug import Request, Response

from talik.config import EsaOptions, RetryOptions, StudyConfig
from talik.tasks.ingest import esa
from talik.tasks.ingest.common import MissingCredentialError, PermanentServiceError
from talik.tasks.ingest.ledger import Ledger
from talik.tasks.ingest.rawstore import sha256_of

CDSE_USER, CDSE_PASS = "cdse-user@example.org", "cdse-Secret-pa55word"
DHUS_USER, DHUS_PASS = "dhus-mirror-user", "dhus-Secret-pa55word"
SECRETS = (CDSE_USER, CDSE_PASS, DHUS_USER, DHUS_PASS)
FAST = RetryOptions(attempts=3, backoff_s=0.01, max_backoff_s=5)
BBOX = (10.0, 45.0, 11.0, 46.0)


@pytest.fixture(scope="session")
def httpserver_listen_address():
    return ("127.0.0.1", 0)


@pytest.fixture(autouse=True)
def fake_credentials(monkeypatch):
    for name, value in (("COPERNICUS_USERNAME", CDSE_USER), ("COPERNICUS_PASSWORD", CDSE_PASS),
                        ("DHUS_USERNAME", DHUS_USER), ("DHUS_PASSWORD", DHUS_PASS)):
        monkeypatch.setenv(name, value)
    monkeypatch.setattr(esa, "PAGE_SIZE", 2)


def assert_no_secret(text: str | bytes) -> None:
    if isinstance(text, bytes):
        text = text.decode("utf-8", "replace")
    for secret in SECRETS:
        assert secret not in text


def study(tmp_path: Path, **esa_options) -> StudyConfig:
    return StudyConfig.model_validate({
        "name": "esa-test", "title": "ESA ingest test",
        "aoi": {"name": "box", "bbox": list(BBOX)},
        "sensors": {"sentinel1": {"platform": "Sentinel-1", "band": "C", "wavelength_m": 0.0555,
                                  "incidence_deg": 39.0, "direction": "ascending",
                                  "polarization": "VV"}},
        "source": {"kind": "local", "hyp3_dir": str(tmp_path / "hyp3")},
        "stores": {"work_dir": str(tmp_path / "work"), "release_dir": str(tmp_path / "releases")},
        "ingest": {"retries": FAST.model_dump(), "esa": {"enabled": True, **esa_options}},
    })


# ------------------------------------------------------------------------ CDSE OData format
def _attr(kind: str, name: str, value) -> dict:
    value_type = {"Integer": "Int64"}.get(kind, kind)
    return {"@odata.type": f"#OData.CSC.{kind}Attribute", "Name": name, "Value": value,
            "ValueType": value_type}


def cdse_product(i: int) -> dict:
    name = (f"S1A_IW_SLC__1SDV_2021010{i}T001122_2021010{i}T001149_03600{i}_0437E{i}_AB{i}C"
            ".SAFE")
    return {
        "@odata.mediaContentType": "application/octet-stream",
        "Id": f"a000000{i}-1111-2222-3333-444444444444", "Name": name,
        "ContentType": "application/octet-stream", "ContentLength": 4_500_000_000 + i,
        "OriginDate": f"2021-01-0{i}T02:01:02.000Z", "PublicationDate": f"2021-01-0{i}T03:01:02.000Z",
        "ModificationDate": f"2021-01-0{i}T03:01:02.000Z", "Online": True, "EvictionDate": "",
        "S3Path": f"/eodata/Sentinel-1/SAR/SLC/2021/01/0{i}/{name}",
        "Checksum": [{"Value": f"{i:x}" * 32, "Algorithm": "MD5", "ChecksumDate": "2021-01-05T03:01:02Z"},
                     {"Value": "ff" * 32, "Algorithm": "BLAKE3", "ChecksumDate": "2021-01-05T03:01:02Z"}],
        "ContentDate": {"Start": f"2021-01-0{i}T00:11:22.123Z", "End": f"2021-01-0{i}T00:11:49.456Z"},
        "Footprint": "geography'SRID=4326;POLYGON ((10.1 45.1, 11.2 45.3, 11.0 46.2, 9.9 46.0, 10.1 45.1))'",
        "GeoFootprint": {"type": "Polygon", "coordinates": [[[10.1, 45.1], [11.2, 45.3], [11.0, 46.2],
                                                             [9.9, 46.0], [10.1, 45.1]]]},
        "Attributes": [
            _attr("String", "origin", "ESA"), _attr("Integer", "orbitNumber", 36000 + i),
            _attr("Integer", "relativeOrbitNumber", 94), _attr("String", "orbitDirection", "ASCENDING"),
            _attr("String", "productType", "SLC"), _attr("String", "platformShortName", "SENTINEL-1"),
            _attr("String", "platformSerialIdentifier", "A"), _attr("String", "instrumentShortName", "SAR"),
            _attr("String", "operationalMode", "IW"), _attr("String", "swathIdentifier", "IW"),
            _attr("String", "polarisationChannels", "VV&VH"), _attr("String", "processingLevel", "LEVEL1"),
            _attr("String", "timeliness", "Fast-24h")],
        "Assets": [],
    }


def cdse_handler(products: list[dict], seen: list[Request]):
    def handler(request: Request) -> Response:
        seen.append(request)
        skip, top = int(request.args.get("$skip", 0)), int(request.args["$top"])
        body = {"@odata.context": "$metadata#Products(Attributes())(Assets())",
                "value": products[skip:skip + top]}
        if skip + top < len(products):  # the catalogue's next link, query URL-encoded
            args = request.args.to_dict(flat=False)
            args["$skip"] = [str(skip + top)]
            body["@odata.nextLink"] = request.base_url + "?" + urlencode(args, doseq=True)
        return Response(json.dumps(body), content_type="application/json")

    return handler


OIDC_PATH = "/auth/realms/CDSE/.well-known/openid-configuration"


def serve_oidc(httpserver) -> None:
    """The identity server's discovery document (eodag's Keycloak plugin reads it when the
    results get their downloaders, as the download links point at the catalogue host)."""
    realm = httpserver.url_for("/auth/realms/CDSE")
    httpserver.expect_request(OIDC_PATH).respond_with_json({
        "issuer": realm, "authorization_endpoint": f"{realm}/protocol/openid-connect/auth",
        "token_endpoint": f"{realm}/protocol/openid-connect/token",
        "jwks_uri": f"{realm}/protocol/openid-connect/certs",
        "userinfo_endpoint": f"{realm}/protocol/openid-connect/userinfo",
        "grant_types_supported": ["authorization_code", "refresh_token", "password"],
        "response_types_supported": ["code"], "id_token_signing_alg_values_supported": ["RS256"]})


def cdse_options(httpserver, **extra) -> EsaOptions:
    return EsaOptions(enabled=True, provider="cop_dataspace",
                      search_url=httpserver.url_for("/odata/v1/Products"),
                      auth_url=httpserver.url_for(OIDC_PATH),
                      collection="S1_SAR_SLC", start=dt.date(2021, 1, 1), end=dt.date(2021, 1, 31),
                      flight_direction="ASCENDING", relative_orbit=94, **extra)


def test_cdse_search_pages_and_maps_every_field(httpserver, caplog, tmp_path):
    caplog.set_level("DEBUG")
    seen: list[Request] = []
    httpserver.expect_request("/odata/v1/Products").respond_with_handler(
        cdse_handler([cdse_product(i) for i in (1, 2, 3)], seen))
    serve_oidc(httpserver)
    before = {k: v for k, v in os.environ.items() if k.startswith("EODAG")}

    t0 = time.perf_counter()
    records = esa.search_esa(cdse_options(httpserver), BBOX, FAST)
    elapsed = time.perf_counter() - t0

    assert elapsed < 10, f"eodag construction + 2-page search took {elapsed:.1f} s"
    assert [r.scene_id for r in records] == [cdse_product(i)["Name"][:-5] for i in (1, 2, 3)]
    assert [req.args["$skip"] for req in seen] == ["0", "2"]
    assert all(req.args["$top"] == "2" for req in seen)
    filt = seen[0].args["$filter"]
    for clause in ("Collection/Name eq 'SENTINEL-1'", "att/OData.CSC.StringAttribute/Value eq 'SLC'",
                   "Value eq 'ASCENDING'", "Name eq 'relativeOrbitNumber'", "Value eq 94",
                   "ContentDate/Start lt 2021-02-01T00:00:00.000Z",
                   "ContentDate/End gt 2021-01-01T00:00:00.000Z", "OData.CSC.Intersects"):
        assert clause in filt
    r = records[0]
    assert r.source == "cop_dataspace"
    assert r.platform == "Sentinel-1A"
    assert r.start_time == dt.datetime(2021, 1, 1, 0, 11, 22, 123000, tzinfo=dt.UTC)
    assert r.stop_time == dt.datetime(2021, 1, 1, 0, 11, 49, 456000, tzinfo=dt.UTC)
    assert r.flight_direction == "ASCENDING"
    assert r.relative_orbit == 94
    assert r.product_type == "SLC"
    assert r.beam_mode == "IW"
    assert r.polarization == "VV+VH"
    assert r.footprint_wkt.startswith("POLYGON ((10.1 45.1, 11.2 45.3")
    # the download link is eodag's template for the provider (the real CDSE host), no token
    assert r.url == ("https://catalogue.dataspace.copernicus.eu/odata/v1/Products("
                     "a0000001-1111-2222-3333-444444444444)/$value")
    assert r.size_bytes == 4_500_000_001
    assert r.md5 == "1" * 32
    assert records[2].md5 == "3" * 32
    # the environment is as it was: no eodag settings or credentials left behind
    assert {k: v for k, v in os.environ.items() if k.startswith("EODAG")} == before
    assert_no_secret(caplog.text)


def test_cdse_503_recovers_and_429_retry_after_is_honoured(httpserver, caplog):
    caplog.set_level("INFO")
    seen: list[Request] = []
    ok = cdse_handler([cdse_product(1)], seen)
    httpserver.expect_ordered_request("/odata/v1/Products").respond_with_data(
        "Service Unavailable", status=503)
    httpserver.expect_ordered_request("/odata/v1/Products").respond_with_data(
        '{"detail": "Too Many Requests"}', status=429, headers={"Retry-After": "1"},
        content_type="application/json")
    httpserver.expect_ordered_request("/odata/v1/Products").respond_with_handler(ok)
    serve_oidc(httpserver)

    t0 = time.perf_counter()
    records = esa.search_esa(cdse_options(httpserver), BBOX, FAST)
    elapsed = time.perf_counter() - t0

    assert [r.scene_id for r in records] == [cdse_product(1)["Name"][:-5]]
    assert len([r for r, _ in httpserver.log if r.path == "/odata/v1/Products"]) == 3
    assert elapsed >= 0.95, "the 429's Retry-After (1 s) was not waited for"
    assert "HTTP 503" in caplog.text and "HTTP 429" in caplog.text
    assert_no_secret(caplog.text)


def test_cdse_401_fails_fast_naming_the_credential(httpserver, caplog):
    caplog.set_level("DEBUG")
    httpserver.expect_request("/odata/v1/Products").respond_with_data(
        '{"detail": "Unauthorized"}', status=401, content_type="application/json")
    with pytest.raises(MissingCredentialError) as err:
        esa.search_esa(cdse_options(httpserver), BBOX, FAST)
    assert len(httpserver.log) == 1  # not retried
    assert "COPERNICUS_USERNAME" in str(err.value) and "COPERNICUS_PASSWORD" in str(err.value)
    assert_no_secret(str(err.value))
    assert_no_secret(caplog.text)


def test_cdse_400_names_the_setting(httpserver):
    httpserver.expect_request("/odata/v1/Products").respond_with_data(
        '{"detail": "Invalid filter"}', status=400, content_type="application/json")
    with pytest.raises(PermanentServiceError) as err:
        esa.search_esa(cdse_options(httpserver), BBOX, FAST)
    assert not isinstance(err.value, MissingCredentialError)
    assert len(httpserver.log) == 1
    assert "ingest.esa.collection" in str(err.value)


# ------------------------------------------------------------------------------ STAC (ERS)
ERS_ID = "SAR_IMS_1PNESA19950612_101215_00000018G147_00022_00773_0000"
ERS_BYTES = b"ERS-2 SAR IMS product bytes\n" * 200


def ers_item(httpserver) -> dict:
    md5 = hashlib.md5(ERS_BYTES).hexdigest()
    return {
        "type": "Feature", "stac_version": "1.0.0",
        "stac_extensions": ["https://stac-extensions.github.io/sar/v1.0.0/schema.json",
                            "https://stac-extensions.github.io/sat/v1.0.0/schema.json",
                            "https://stac-extensions.github.io/file/v2.1.0/schema.json"],
        "id": ERS_ID, "collection": "SAR_IMS_1P", "bbox": [10.2, 45.1, 11.0, 46.1],
        "geometry": {"type": "Polygon", "coordinates": [[[10.2, 45.1], [11.0, 45.2], [10.9, 46.1],
                                                         [10.1, 46.0], [10.2, 45.1]]]},
        "properties": {
            "datetime": "1995-06-12T10:12:15Z", "start_datetime": "1995-06-12T10:12:15Z",
            "end_datetime": "1995-06-12T10:12:31Z", "platform": "ers-2", "constellation": "ers",
            "instruments": ["sar"], "sat:orbit_state": "descending", "sat:relative_orbit": 22,
            "sat:absolute_orbit": 773, "sar:instrument_mode": "IM", "sar:frequency_band": "C",
            "sar:polarizations": ["VV"], "sar:product_type": "SAR_IMS_1P"},
        "assets": {"product": {"href": httpserver.url_for(f"/data/{ERS_ID}.ZIP"),
                               "type": "application/zip", "roles": ["data"],
                               "file:size": len(ERS_BYTES), "file:checksum": "d50110" + md5}},
        "links": [{"rel": "self", "href": httpserver.url_for(f"/stac/collections/SAR_IMS_1P/items/{ERS_ID}")},
                  {"rel": "collection", "href": httpserver.url_for("/stac/collections/SAR_IMS_1P")}],
    }


def test_stac_provider_ers_item_found_recorded_and_downloaded(httpserver, caplog, tmp_path):
    caplog.set_level("INFO")
    bodies: list[dict] = []

    def search(request: Request) -> Response:
        bodies.append(request.get_json())
        return Response(json.dumps({"type": "FeatureCollection", "features": [ers_item(httpserver)],
                                    "numberMatched": 1, "numberReturned": 1, "links": []}),
                        content_type="application/geo+json")

    httpserver.expect_request("/stac/search", method="POST").respond_with_handler(search)
    httpserver.expect_request(f"/data/{ERS_ID}.ZIP").respond_with_data(
        ERS_BYTES, content_type="application/zip")
    cfg = study(tmp_path, provider="eodc_heritage", search_url=httpserver.url_for("/stac/search"),
                collection="SAR_IMS_1P", start=dt.date(1995, 6, 1), end=dt.date(1995, 6, 30),
                flight_direction="DESCENDING", relative_orbit=22, download=True)
    ledger = Ledger(tmp_path / "work" / "ingest" / "ledger.sqlite")

    summary = esa.discover_esa_scenes(cfg, ledger)

    assert bodies[0]["collections"] == ["SAR_IMS_1P"]
    assert bodies[0]["datetime"] == "1995-06-01T00:00:00.000Z/1995-07-01T00:00:00.000Z"
    assert bodies[0]["query"]["sat:orbit_state"] == {"eq": "descending"}
    assert bodies[0]["intersects"]["type"] == "Polygon"
    assert summary["found"] == 1 and summary["new"] == 1 and summary["downloaded"] == 1
    json.dumps(summary)
    (scene,) = ledger.scenes("eodc_heritage")
    assert scene.scene_id == ERS_ID
    assert scene.platform == "ERS-2"
    assert scene.start_time == dt.datetime(1995, 6, 12, 10, 12, 15, tzinfo=dt.UTC)
    assert scene.stop_time == dt.datetime(1995, 6, 12, 10, 12, 31, tzinfo=dt.UTC)
    assert scene.flight_direction == "DESCENDING" and scene.relative_orbit == 22
    assert scene.product_type == "SAR_IMS_1P" and scene.beam_mode == "IM"
    assert scene.polarization == "VV"
    assert scene.url == httpserver.url_for(f"/data/{ERS_ID}.ZIP")
    assert scene.size_bytes == len(ERS_BYTES)
    assert scene.md5 == hashlib.md5(ERS_BYTES).hexdigest()
    assert scene.footprint_wkt.startswith("POLYGON ((10.2 45.1")
    (entry,) = ledger.files("eodc_heritage")
    path = tmp_path / "work" / "raw" / entry.path
    assert path.is_relative_to(tmp_path / "work" / "raw" / "esa" / "eodc_heritage")
    assert path.read_bytes() == ERS_BYTES and entry.sha256 == sha256_of(path)

    again = esa.discover_esa_scenes(cfg, ledger)  # a second run: nothing new, nothing fetched
    assert again["new"] == 0 and again["downloaded"] == 0 and again["already_stored"] == 1
    assert len([r for r, _ in httpserver.log if r.path.startswith("/data/")]) == 1
    path.unlink()  # a scene deleted from the raw store is fetched again
    third = esa.discover_esa_scenes(cfg, ledger)
    assert third["downloaded"] == 1 and path.read_bytes() == ERS_BYTES
    assert_no_secret(caplog.text)
    assert_no_secret(ledger.path.read_bytes())


# --------------------------------------------------------------------------- DHuS (sentinelsat)
def dhus_products(httpserver) -> list[dict]:
    out = []
    for i in (1, 2, 3):
        uuid = f"d000000{i}-aaaa-bbbb-cccc-dddddddddddd"
        name = f"S1B_IW_SLC__1SDV_2020020{i}T051122_2020020{i}T051149_02000{i}_0260A{i}_F00{i}"
        data = f"SAFE zip of {name}\n".encode() * 50
        out.append({"uuid": uuid, "name": name, "data": data, "md5": hashlib.md5(data).hexdigest(),
                    "begin": f"2020-02-0{i}T05:11:22.316Z", "end": f"2020-02-0{i}T05:11:49.258Z"})
    return out


def opensearch_entry(httpserver, p: dict) -> dict:
    base = httpserver.url_for("/dhus/")
    return {
        "title": p["name"],
        "link": [{"href": f"{base}odata/v1/Products('{p['uuid']}')/$value"},
                 {"rel": "alternative", "href": f"{base}odata/v1/Products('{p['uuid']}')/"},
                 {"rel": "icon",
                  "href": f"{base}odata/v1/Products('{p['uuid']}')/Products('Quicklook')/$value"}],
        "id": p["uuid"],
        "summary": f"Date: {p['begin']}, Instrument: SAR-C, Mode: VV VH, Satellite: Sentinel-1, Size: 4.5 GB",
        "date": [{"name": "beginposition", "content": p["begin"]},
                 {"name": "endposition", "content": p["end"]},
                 {"name": "ingestiondate", "content": "2020-02-05T09:00:00.000Z"}],
        "int": [{"name": "orbitnumber", "content": "20001"}, {"name": "relativeorbitnumber", "content": "44"},
                {"name": "slicenumber", "content": "5"}],
        "str": [{"name": "sensoroperationalmode", "content": "IW"},
                {"name": "footprint",
                 "content": "MULTIPOLYGON (((10.1 45.1, 11.2 45.3, 11.0 46.2, 9.9 46.0, 10.1 45.1)))"},
                {"name": "format", "content": "SAFE"}, {"name": "producttype", "content": "SLC"},
                {"name": "platformname", "content": "Sentinel-1"},
                {"name": "platformidentifier", "content": "2016-025A"},
                {"name": "orbitdirection", "content": "DESCENDING"},
                {"name": "polarisationmode", "content": "VV VH"}, {"name": "size", "content": "4.5 GB"},
                {"name": "filename", "content": p["name"] + ".SAFE"},
                {"name": "identifier", "content": p["name"]}, {"name": "uuid", "content": p["uuid"]},
                {"name": "swathidentifier", "content": "IW1 IW2 IW3"}],
    }


def odata_product(httpserver, p: dict) -> dict:
    base = httpserver.url_for("/dhus/")
    ms = int(dt.datetime.fromisoformat(p["begin"].replace("Z", "+00:00")).timestamp() * 1000)
    return {"d": {
        "__metadata": {"id": f"{base}odata/v1/Products('{p['uuid']}')",
                       "uri": f"{base}odata/v1/Products('{p['uuid']}')", "type": "DHuS.Product",
                       "content_type": "application/octet-stream",
                       "media_src": f"{base}odata/v1/Products('{p['uuid']}')/$value",
                       "edit_media": f"{base}odata/v1/Products('{p['uuid']}')/$value"},
        "Id": p["uuid"], "Name": p["name"], "ContentType": "application/octet-stream",
        "ContentLength": str(len(p["data"])), "ChildrenNumber": "1", "Value": None,
        "CreationDate": f"/Date({ms + 3_600_000})/", "IngestionDate": f"/Date({ms + 7_200_000})/",
        "ModificationDate": f"/Date({ms + 7_200_000})/", "EvictionDate": None,
        "Online": True, "OnDemand": False,
        "ContentDate": {"__metadata": {"type": "DHuS.TimeRange"}, "Start": f"/Date({ms})/",
                        "End": f"/Date({ms + 27_000})/"},
        "Checksum": {"__metadata": {"type": "DHuS.Checksum"}, "Algorithm": "MD5",
                     "Value": p["md5"].upper()},
        "ContentGeometry": ('<gml:Polygon srsName="http://www.opengis.net/gml/srs/epsg.xml#4326" '
                            'xmlns:gml="http://www.opengis.net/gml"><gml:outerBoundaryIs><gml:LinearRing>'
                            '<gml:coordinates>45.1,10.1 45.3,11.2 46.2,11.0 46.0,9.9 45.1,10.1'
                            '</gml:coordinates></gml:LinearRing></gml:outerBoundaryIs></gml:Polygon>'),
        "Attributes": {"__deferred": {"uri": f"{base}odata/v1/Products('{p['uuid']}')/Attributes"}},
    }}


def serve_dhus(httpserver, products: list[dict], searches: list[Request], corrupt: str | None = None):
    import base64

    expected = "Basic " + base64.b64encode(f"{DHUS_USER}:{DHUS_PASS}".encode()).decode()

    def search(request: Request) -> Response:
        searches.append(request)
        if request.headers.get("Authorization") != expected:
            return Response("Unauthorized", status=401)
        start, rows = int(request.args["start"]), int(request.args["rows"])
        feed = {"opensearch:Query": {"searchTerms": request.args["q"], "startPage": "1"},
                "opensearch:totalResults": str(len(products)), "opensearch:startIndex": str(start),
                "opensearch:itemsPerPage": str(rows),
                "entry": [opensearch_entry(httpserver, p) for p in products[start:start + rows]]}
        return Response(json.dumps({"feed": feed}), content_type="application/json")

    httpserver.expect_request("/dhus/search").respond_with_handler(search)
    for p in products:
        odata = f"/dhus/odata/v1/Products('{p['uuid']}')"
        httpserver.expect_request(odata, query_string="$format=json").respond_with_json(
            odata_product(httpserver, p))
        httpserver.expect_request(odata + "/Online/$value").respond_with_data(
            "true", content_type="text/plain")
        body = p["data"] if p["uuid"] != corrupt else p["data"][:-3] + b"XYZ"
        headers = {"Content-Disposition": f'attachment; filename="{p["name"]}.zip"'}
        httpserver.expect_request(odata + "/$value", method="HEAD").respond_with_data(
            b"", headers={**headers, "Content-Length": str(len(body))})
        httpserver.expect_request(odata + "/$value", method="GET").respond_with_data(
            body, content_type="application/octet-stream", headers=headers)


def test_dhus_search_pages_odata_metadata_and_checked_download(httpserver, caplog, tmp_path):
    caplog.set_level("DEBUG")
    products, searches = dhus_products(httpserver), []
    serve_dhus(httpserver, products, searches, corrupt=products[2]["uuid"])
    cfg = study(tmp_path, backend="sentinelsat", search_url=httpserver.url_for("/dhus/"),
                collection="S1_SAR_SLC", start=dt.date(2020, 2, 1), end=dt.date(2020, 2, 29),
                flight_direction="DESCENDING", relative_orbit=44, download=True)
    ledger = Ledger(tmp_path / "ledger.sqlite")

    summary = esa.discover_esa_scenes(cfg, ledger)

    assert [(r.args["start"], r.args["rows"]) for r in searches] == [("0", "2"), ("2", "2")]
    q = searches[0].args["q"]
    for term in ('platformname:"Sentinel-1"', 'producttype:"SLC"', 'orbitdirection:"DESCENDING"',
                 "relativeorbitnumber:44",
                 'beginPosition:["2020-02-01T00:00:00Z" TO "2020-03-01T00:00:00Z"]',
                 'footprint:"Intersects(POLYGON((10.0 45.0,11.0 45.0,11.0 46.0,10.0 46.0,10.0 45.0)))"'):
        assert term in q
    assert summary["found"] == 3 and summary["new"] == 3
    assert summary["downloaded"] == 2  # the third file's MD5 does not match what OData states
    assert [f["scene_id"] for f in summary["failed"]] == [products[2]["name"]]
    assert "MD5" in summary["failed"][0]["error"]
    scenes = ledger.scenes("dhus")
    assert [s.scene_id for s in scenes] == [p["name"] for p in products]
    s = scenes[0]
    assert s.platform == "Sentinel-1B"
    assert s.start_time == dt.datetime(2020, 2, 1, 5, 11, 22, 316000, tzinfo=dt.UTC)
    assert s.stop_time == dt.datetime(2020, 2, 1, 5, 11, 49, 258000, tzinfo=dt.UTC)
    assert s.flight_direction == "DESCENDING" and s.relative_orbit == 44
    assert s.product_type == "SLC" and s.beam_mode == "IW" and s.polarization == "VV+VH"
    assert s.footprint_wkt.startswith("MULTIPOLYGON (((10.1 45.1")
    assert s.url == httpserver.url_for(f"/dhus/odata/v1/Products('{products[0]['uuid']}')/$value")
    assert s.size_bytes == len(products[0]["data"]) and s.md5 == products[0]["md5"]
    files = ledger.files("dhus")
    assert [Path(e.path).name for e in files] == [p["name"] + ".zip" for p in products[:2]]
    for entry, p in zip(files, products, strict=False):
        assert (tmp_path / "work" / "raw" / entry.path).read_bytes() == p["data"]
    assert_no_secret(caplog.text)
    assert_no_secret(ledger.path.read_bytes())


def test_dhus_401_fails_fast_naming_the_credential(httpserver, caplog, monkeypatch):
    caplog.set_level("DEBUG")
    monkeypatch.setenv("DHUS_PASSWORD", "dhus-Secret-but-wrong")
    searches: list[Request] = []
    serve_dhus(httpserver, dhus_products(httpserver), searches)
    options = EsaOptions(enabled=True, backend="sentinelsat", search_url=httpserver.url_for("/dhus/"))
    with pytest.raises(MissingCredentialError) as err:
        esa.search_esa(options, BBOX, FAST)
    assert len(searches) == 1
    assert "DHUS_USERNAME" in str(err.value) and "DHUS_PASSWORD" in str(err.value)
    for text in (str(err.value), caplog.text):
        assert_no_secret(text)
        assert "dhus-Secret-but-wrong" not in text


def test_missing_dhus_credentials_named_before_any_request(httpserver, monkeypatch):
    monkeypatch.delenv("DHUS_USERNAME")
    options = EsaOptions(enabled=True, backend="sentinelsat", search_url=httpserver.url_for("/dhus/"))
    with pytest.raises(MissingCredentialError, match="DHUS_USERNAME"):
        esa.search_esa(options, BBOX, FAST)
    assert httpserver.log == []
