#!/usr/bin/env python3
"""Builds an OCI image of each filter's .wasm without Docker, into OCI image layouts.

  oci_images.py [--wasm-dir target/wasm32-wasip1/release] [--out target/oci]

For each module, `OUT/<image>/` is an OCI image layout (oci-layout, index.json, blobs/sha256)
holding two tags of the same module, the two formats Istio's image fetcher (and Envoy's OCI
support) accept:

  <version>          the Wasm artifact ("oci" variant): config and first layer
                     application/vnd.module.wasm.config.v1+json, second layer the raw module
                     as application/vnd.module.wasm.content.layer.v1+wasm;
  <version>-compat   a standard image: one application/vnd.oci.image.layer.v1.tar+gzip layer
                     holding plugin.wasm, for registries and tools that refuse custom media types.

Everything is deterministic (fixed timestamps, owners and modes): the same module gives the same
digests. Push with skopeo or oras, e.g.
  skopeo copy oci:target/oci/tollgate:0.1.0 docker://registry.example.com/tollgate/tollgate:0.1.0
"""
import argparse
import gzip
import hashlib
import io
import json
import os
import re
import tarfile

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
IMAGES = {
    "tollgate_token_counter.wasm": ("tollgate-token-counter", "token-counter"),
    "tollgate_guardrails.wasm": ("tollgate-guardrails", "guardrails"),
    "tollgate_provider_rewrite.wasm": ("tollgate-provider-rewrite", "provider_rewrite"),
    "tollgate_quota.wasm": ("tollgate-quota", "quota"),
    "tollgate.wasm": ("tollgate", "tollgate"),
}
MANIFEST = "application/vnd.oci.image.manifest.v1+json"
INDEX = "application/vnd.oci.image.index.v1+json"
WASM_CONFIG = "application/vnd.module.wasm.config.v1+json"
WASM_LAYER = "application/vnd.module.wasm.content.layer.v1+wasm"
IMAGE_CONFIG = "application/vnd.oci.image.config.v1+json"
TAR_GZIP = "application/vnd.oci.image.layer.v1.tar+gzip"


def version():
    with open(os.path.join(ROOT, "Cargo.toml")) as f:
        return re.search(r'^version = "([^"]+)"', f.read(), re.M).group(1)


class Layout:
    def __init__(self, path):
        self.path = path
        os.makedirs(os.path.join(path, "blobs", "sha256"), exist_ok=True)
        with open(os.path.join(path, "oci-layout"), "w") as f:
            json.dump({"imageLayoutVersion": "1.0.0"}, f)
        self.manifests = []

    def blob(self, data, media_type, annotations=None):
        digest = "sha256:" + hashlib.sha256(data).hexdigest()
        with open(os.path.join(self.path, "blobs", "sha256", digest.split(":")[1]), "wb") as f:
            f.write(data)
        descriptor = {"mediaType": media_type, "digest": digest, "size": len(data)}
        if annotations:
            descriptor["annotations"] = annotations
        return descriptor

    def tag(self, manifest, tag):
        data = json.dumps(manifest, indent=2, sort_keys=True).encode()
        self.manifests.append(self.blob(data, MANIFEST, {"org.opencontainers.image.ref.name": tag}))

    def close(self):
        with open(os.path.join(self.path, "index.json"), "w") as f:
            json.dump({"schemaVersion": 2, "mediaType": INDEX, "manifests": self.manifests}, f, indent=2, sort_keys=True)


def plugin_tar(module):
    """plugin.wasm in a tar.gz, byte-for-byte reproducible; returns (gzip bytes, tar bytes)."""
    raw = io.BytesIO()
    with tarfile.open(fileobj=raw, mode="w", format=tarfile.PAX_FORMAT) as tar:
        info = tarfile.TarInfo("plugin.wasm")
        info.size, info.mode, info.mtime, info.uid, info.gid = len(module), 0o444, 0, 0, 0
        tar.addfile(info, io.BytesIO(module))
    compressed = io.BytesIO()
    with gzip.GzipFile(fileobj=compressed, mode="wb", mtime=0) as gz:
        gz.write(raw.getvalue())
    return compressed.getvalue(), raw.getvalue()


def build(module_path, out_dir, image, root_id, tag):
    with open(module_path, "rb") as f:
        module = f.read()
    annotations = {
        "org.opencontainers.image.title": image,
        "org.opencontainers.image.version": tag,
        "org.opencontainers.image.description": f"Tollgate {image} proxy-wasm filter for Envoy (root id {root_id})",
    }
    layout = Layout(os.path.join(out_dir, image))
    # The Wasm artifact: Istio wants exactly two layers, the config and the module.
    config = json.dumps({"type": "envoy_proxy", "abiVersions": ["v0.2.1"], "config": {"rootIds": [root_id]}},
                        sort_keys=True).encode()
    config_descriptor = layout.blob(config, WASM_CONFIG)
    layout.tag({
        "schemaVersion": 2, "mediaType": MANIFEST, "config": config_descriptor,
        "layers": [config_descriptor,
                   layout.blob(module, WASM_LAYER, {"org.opencontainers.image.title": "plugin.wasm"})],
        "annotations": annotations,
    }, tag)
    # The compat image: one tar.gz layer with plugin.wasm.
    compressed, raw = plugin_tar(module)
    image_config = json.dumps({
        "architecture": "wasm", "os": "wasip1", "config": {"Labels": annotations},
        "rootfs": {"type": "layers", "diff_ids": ["sha256:" + hashlib.sha256(raw).hexdigest()]},
    }, sort_keys=True).encode()
    layout.tag({
        "schemaVersion": 2, "mediaType": MANIFEST, "config": layout.blob(image_config, IMAGE_CONFIG),
        "layers": [layout.blob(compressed, TAR_GZIP)], "annotations": annotations,
    }, f"{tag}-compat")
    layout.close()
    return layout.path


def main():
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--wasm-dir", default=os.path.join(ROOT, "target", "wasm32-wasip1", "release"))
    p.add_argument("--out", default=os.path.join(ROOT, "target", "oci"))
    a = p.parse_args()
    tag = version()
    for name, (image, root_id) in IMAGES.items():
        path = build(os.path.join(a.wasm_dir, name), a.out, image, root_id, tag)
        print(f"{path}: {image}:{tag}, {image}:{tag}-compat")


if __name__ == "__main__":
    main()
