#!/usr/bin/env python3
"""The CycloneDX 1.5 SBOM (JSON) of what is linked into the static sealkit binary.

    cargo metadata --format-version 1 --locked --filter-platform TARGET --features F > meta.json
    scripts/sbom.py meta.json Cargo.lock TARGET F > sealkit.cdx.json

Called by scripts/build-static.sh before it compiles; the binary carries the SHA-256 of the
output (`sealkit --version --verbose`), so the output is a function of its inputs only:
no random serial number (a UUID derived from the commit, target and Cargo.lock), no clock
(the timestamp is SOURCE_DATE_EPOCH), no path of the machine, everything sorted.

Components are the crates reached from sealkit through normal dependencies for TARGET —
what is compiled into the binary — with version, package URL, the SHA-256 of the .crate
from Cargo.lock and the licence expression. Procedural macros and build-script
dependencies run only at build time and are left out, except the crates in EMBEDDED, build
dependencies whose C sources are compiled and linked in (openssl-src: OpenSSL itself).
The Rust standard library and musl's libc come with the toolchain named in the metadata.

Environment: SOURCE_DATE_EPOCH and SEALKIT_BUILD_COMMIT (both required), SEALKIT_RUSTC
(`rustc -V`, optional).
"""

import datetime
import hashlib
import json
import os
import sys
import tomllib
import urllib.parse
import uuid

# Build dependencies whose code is linked into the binary, and who links it.
EMBEDDED = {"openssl-src": "openssl-sys"}
REGISTRY = "registry+https://github.com/rust-lang/crates.io-index"


def fail(message):
    print(f"sbom.py: {message}", file=sys.stderr)
    sys.exit(1)


def purl(name, version):
    # The purl spec percent-encodes '+' in versions (openssl-src 300.6.1+3.6.3).
    return f"pkg:cargo/{name}@{urllib.parse.quote(version, safe='')}"


def spdx(expression):
    # Cargo still accepts the legacy `MIT/Apache-2.0`; SPDX spells it with OR.
    return " OR ".join(part.strip() for part in expression.split("/"))


def licenses(package):
    if package.get("license"):
        return [{"expression": spdx(package["license"])}]
    if package.get("license_file"):
        name = os.path.basename(package["license_file"])
        return [{"license": {"name": f"see {name} in the crate"}}]
    return []


def main(argv):
    if len(argv) != 5:
        fail("usage: sbom.py METADATA.json Cargo.lock TARGET FEATURES")
    metadata_path, lock_path, target, features = argv[1:]
    epoch = os.environ.get("SOURCE_DATE_EPOCH", "")
    commit = os.environ.get("SEALKIT_BUILD_COMMIT", "")
    if not epoch.isdigit() or not commit:
        fail("SOURCE_DATE_EPOCH and SEALKIT_BUILD_COMMIT must be set (scripts/build-static.sh does)")

    with open(metadata_path, encoding="utf-8") as f:
        metadata = json.load(f)
    with open(lock_path, "rb") as f:
        lock_bytes = f.read()
    lock = tomllib.loads(lock_bytes.decode("utf-8"))
    checksums = {
        (p["name"], p["version"]): p.get("checksum")
        for p in lock["package"]
        if p.get("source") == REGISTRY
    }

    packages = {p["id"]: p for p in metadata["packages"]}
    nodes = {n["id"]: n for n in metadata["resolve"]["nodes"]}
    root_id = metadata["resolve"]["root"]
    if root_id is None:
        fail("cargo metadata names no root package")
    root = packages[root_id]

    def is_proc_macro(package):
        return any("proc-macro" in t["kind"] for t in package["targets"])

    def normal_deps(node_id):
        for dep in nodes[node_id]["deps"]:
            if any(kind["kind"] is None for kind in dep["dep_kinds"]):
                yield dep["pkg"]

    # Everything reached through normal dependencies, stopping at procedural macros.
    linked = set()
    stack = [root_id]
    while stack:
        current = stack.pop()
        for dep in normal_deps(current):
            if dep in linked or is_proc_macro(packages[dep]):
                continue
            linked.add(dep)
            stack.append(dep)
    # Build dependencies whose sources are compiled into a linked crate.
    embedded = {}
    for node_id in list(linked):
        for dep in nodes[node_id]["deps"]:
            name = packages[dep["pkg"]]["name"]
            if EMBEDDED.get(name) == packages[node_id]["name"]:
                linked.add(dep["pkg"])
                embedded[dep["pkg"]] = node_id

    components = []
    for pid in linked:
        package = packages[pid]
        if package.get("source") != REGISTRY:
            fail(f"{package['name']} {package['version']} is not from crates.io ({package.get('source')})")
        checksum = checksums.get((package["name"], package["version"]))
        if not checksum:
            fail(f"Cargo.lock has no checksum for {package['name']} {package['version']}")
        component = {
            "type": "library",
            "bom-ref": purl(package["name"], package["version"]),
            "name": package["name"],
            "version": package["version"],
        }
        if package.get("description"):
            component["description"] = " ".join(package["description"].split())
        component["scope"] = "required"
        component["hashes"] = [{"alg": "SHA-256", "content": checksum}]
        component["licenses"] = licenses(package)
        component["purl"] = purl(package["name"], package["version"])
        references = []
        if package.get("repository"):
            references.append({"type": "vcs", "url": package["repository"]})
        references.append(
            {
                "type": "distribution",
                "url": f"https://crates.io/api/v1/crates/{package['name']}/{package['version']}/download",
            }
        )
        component["externalReferences"] = references
        if pid in embedded:
            component["properties"] = [
                {
                    "name": "sealkit:linked",
                    "value": f"build dependency of {packages[embedded[pid]]['name']}; its C sources are compiled and linked into the binary",
                }
            ]
        components.append(component)
    components.sort(key=lambda c: (c["name"], c["version"]))

    def ref(pid):
        return purl(packages[pid]["name"], packages[pid]["version"])

    dependencies = []
    for pid in [root_id] + sorted(linked, key=ref):
        depends = {ref(d) for d in normal_deps(pid) if d in linked}
        depends |= {ref(e) for e, parent in embedded.items() if parent == pid}
        dependencies.append({"ref": ref(pid), "dependsOn": sorted(depends)})

    lock_sha256 = hashlib.sha256(lock_bytes).hexdigest()
    serial = uuid.uuid5(
        uuid.NAMESPACE_URL,
        f"sealkit-sbom:{commit}:{target}:{features}:{lock_sha256}",
    )
    timestamp = datetime.datetime.fromtimestamp(int(epoch), datetime.timezone.utc)
    properties = [
        {"name": "sealkit:commit", "value": commit},
        {"name": "sealkit:target", "value": target},
        {"name": "sealkit:features", "value": features},
        {"name": "sealkit:cargo-lock-sha256", "value": lock_sha256},
        {"name": "sealkit:source-date-epoch", "value": epoch},
        {
            "name": "sealkit:scope",
            "value": "crates compiled into the binary; build-time-only crates (build scripts' dependencies, procedural macros) are in Cargo.lock only",
        },
    ]
    if os.environ.get("SEALKIT_RUSTC"):
        properties.append({"name": "sealkit:rustc", "value": os.environ["SEALKIT_RUSTC"]})
    bom = {
        "bomFormat": "CycloneDX",
        "specVersion": "1.5",
        "serialNumber": f"urn:uuid:{serial}",
        "version": 1,
        "metadata": {
            "timestamp": timestamp.strftime("%Y-%m-%dT%H:%M:%SZ"),
            "tools": {
                "components": [
                    {
                        "type": "application",
                        "name": "sealkit scripts/sbom.py",
                        "version": commit,
                    }
                ]
            },
            "component": {
                "type": "application",
                "bom-ref": ref(root_id),
                "name": root["name"],
                "version": root["version"],
                "description": " ".join((root.get("description") or "").split()),
                "licenses": licenses(root),
                "purl": ref(root_id),
            },
            "properties": properties,
        },
        "components": components,
        "dependencies": dependencies,
    }
    sys.stdout.write(json.dumps(bom, indent=2, ensure_ascii=False) + "\n")


if __name__ == "__main__":
    main(sys.argv)
