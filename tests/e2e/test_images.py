"""OCI images of every filter, built without Docker by tools/oci_images.py (what `make images`
runs): the layout, the media types Istio's image fetcher expects, the layer digests against the
modules' own sha256, and an independent reader (skopeo, which verifies every digest it copies)."""
import gzip
import hashlib
import io
import json
import os
import shutil
import subprocess
import sys
import tarfile

import pytest

from harness import ROOT, WASM_DIR

sys.path.insert(0, os.path.join(ROOT, "tools"))
import oci_images  # noqa: E402

SKOPEO = shutil.which("skopeo")


def sha256(data):
    return "sha256:" + hashlib.sha256(data).hexdigest()


@pytest.fixture(scope="module")
def layouts(tmp_path_factory):
    out = tmp_path_factory.mktemp("oci")
    subprocess.run([sys.executable, os.path.join(ROOT, "tools", "oci_images.py"), "--out", str(out)], check=True,
                   capture_output=True)
    return out


def read_blob(layout, descriptor):
    with open(os.path.join(layout, "blobs", "sha256", descriptor["digest"].split(":")[1]), "rb") as f:
        data = f.read()
    assert sha256(data) == descriptor["digest"] and len(data) == descriptor["size"], descriptor
    return data


@pytest.mark.parametrize("module,image", [(m, i) for m, (i, _) in oci_images.IMAGES.items()])
def test_each_filter_has_an_oci_image_in_both_formats(layouts, module, image):
    layout = os.path.join(layouts, image)
    version = oci_images.version()
    assert json.load(open(os.path.join(layout, "oci-layout"))) == {"imageLayoutVersion": "1.0.0"}
    index = json.load(open(os.path.join(layout, "index.json")))
    assert index["schemaVersion"] == 2 and index["mediaType"] == "application/vnd.oci.image.index.v1+json"
    tags = {m["annotations"]["org.opencontainers.image.ref.name"]: m for m in index["manifests"]}
    assert set(tags) == {version, f"{version}-compat"}
    wasm = open(os.path.join(WASM_DIR, module), "rb").read()

    # The Wasm artifact: config + two layers, the second the module itself.
    manifest = json.loads(read_blob(layout, tags[version]))
    assert tags[version]["mediaType"] == manifest["mediaType"] == "application/vnd.oci.image.manifest.v1+json"
    assert manifest["config"]["mediaType"] == "application/vnd.module.wasm.config.v1+json"
    assert json.loads(read_blob(layout, manifest["config"]))["type"] == "envoy_proxy"
    assert [layer["mediaType"] for layer in manifest["layers"]] == [
        "application/vnd.module.wasm.config.v1+json", "application/vnd.module.wasm.content.layer.v1+wasm"]
    wasm_layer = manifest["layers"][1]
    assert wasm_layer["digest"] == sha256(wasm) and wasm_layer["size"] == len(wasm)
    assert read_blob(layout, wasm_layer) == wasm

    # The compat image: one tar.gz layer with plugin.wasm.
    compat = json.loads(read_blob(layout, tags[f"{version}-compat"]))
    assert compat["config"]["mediaType"] == "application/vnd.oci.image.config.v1+json"
    assert [layer["mediaType"] for layer in compat["layers"]] == ["application/vnd.oci.image.layer.v1.tar+gzip"]
    raw = gzip.decompress(read_blob(layout, compat["layers"][0]))
    with tarfile.open(fileobj=io.BytesIO(raw)) as tar:
        assert tar.getnames() == ["plugin.wasm"]
        assert tar.extractfile("plugin.wasm").read() == wasm
    assert json.loads(read_blob(layout, compat["config"]))["rootfs"]["diff_ids"] == [sha256(raw)]

    # An independent reader: skopeo resolves the tags and checks every digest while copying.
    assert SKOPEO, "skopeo is installed by tools/setup.sh"
    for tag, expected in [(version, manifest), (f"{version}-compat", compat)]:
        raw_manifest = subprocess.run([SKOPEO, "inspect", "--raw", f"oci:{layout}:{tag}"], check=True,
                                      capture_output=True).stdout
        assert json.loads(raw_manifest) == expected
        target = os.path.join(layouts, f"copy-{image}-{tag}")
        subprocess.run([SKOPEO, "copy", "-q", f"oci:{layout}:{tag}", f"dir:{target}"], check=True, capture_output=True)
        # skopeo's dir: format stores each blob under its digest.
        last = expected["layers"][-1]["digest"].split(":")[1]
        copied = open(os.path.join(target, last), "rb").read()
        assert (copied if tag == version else tarfile.open(fileobj=io.BytesIO(copied)).extractfile("plugin.wasm").read()) == wasm


def test_images_are_reproducible(layouts, tmp_path):
    subprocess.run([sys.executable, os.path.join(ROOT, "tools", "oci_images.py"), "--out", str(tmp_path)], check=True,
                   capture_output=True)
    for image in (i for i, _ in oci_images.IMAGES.values()):
        assert open(os.path.join(layouts, image, "index.json")).read() == open(os.path.join(tmp_path, image, "index.json")).read()
