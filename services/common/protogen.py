"""Generate the Python gRPC code for `protos/recsys/v1/*.proto` into `services/v1/` (`recsys protos`).

The proto package `recsys.v1` maps onto the Python package `recsys.v1`, so generated imports such as
`from recsys.v1 import events_pb2` work unchanged. `--check` regenerates into a temporary folder and
fails when the committed code differs (stale).
"""

from __future__ import annotations

import argparse
import filecmp
import shutil
import sys
import tempfile
from pathlib import Path

from recsys.common.errors import CliError

REPO_ROOT = Path(__file__).resolve().parents[2]
PROTO_ROOT = REPO_ROOT / "protos"
OUT_DIR = REPO_ROOT / "services" / "v1"
HEADER = '"""Generated gRPC / protobuf code for the `recsys.v1` protos (`make protos`). Do not edit by hand."""\n'


def proto_files(proto_root: Path = PROTO_ROOT) -> list[Path]:
    return sorted((proto_root / "recsys" / "v1").glob("*.proto"))


def generate(out_dir: Path, proto_root: Path = PROTO_ROOT) -> list[Path]:
    """Run protoc over every proto and write the modules (plus `__init__.py`) into out_dir."""
    import grpc_tools
    from grpc_tools import protoc

    files = proto_files(proto_root)
    if not files:
        raise CliError(f"no .proto files under {proto_root / 'recsys' / 'v1'}")
    include = Path(grpc_tools.__file__).parent / "_proto"
    with tempfile.TemporaryDirectory() as tmp:
        args = [
            "protoc",
            f"-I{proto_root}",
            f"-I{include}",
            f"--python_out={tmp}",
            f"--pyi_out={tmp}",
            f"--grpc_python_out={tmp}",
            *[str(f.relative_to(proto_root)) for f in files],
        ]
        if protoc.main(args) != 0:
            raise CliError("protoc failed (see the messages above)")
        out_dir.mkdir(parents=True, exist_ok=True)
        generated = sorted((Path(tmp) / "recsys" / "v1").iterdir())
        for path in generated:
            shutil.copyfile(path, out_dir / path.name)
    (out_dir / "__init__.py").write_text(HEADER)
    return [out_dir / p.name for p in generated]


def stale_files(out_dir: Path = OUT_DIR, proto_root: Path = PROTO_ROOT) -> list[str]:
    """Names of generated files that differ from (or are missing in) out_dir."""
    with tempfile.TemporaryDirectory() as tmp:
        fresh = generate(Path(tmp), proto_root)
        names = {p.name for p in fresh} | {"__init__.py"}
        current = {p.name for p in out_dir.glob("*") if p.is_file() and p.suffix in (".py", ".pyi")}
        stale = [n for n in sorted(names) if not (out_dir / n).exists()
                 or not filecmp.cmp(Path(tmp) / n, out_dir / n, shallow=False)]
        stale += sorted(current - names)
    return stale


def _run(args: argparse.Namespace) -> int:
    if args.check:
        stale = stale_files()
        if stale:
            print("stale generated code: " + ", ".join(stale) + " (run `make protos`)", file=sys.stderr)
            return 1
        print("generated code is up to date")
        return 0
    for path in generate(OUT_DIR):
        print(path.relative_to(REPO_ROOT))
    return 0


def register(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser("protos", help="generate the gRPC code from protos/")
    parser.add_argument("--check", action="store_true", help="fail when the generated code is stale")
    parser.set_defaults(func=_run)
