"""``flowclas-export``: checkpoint -> verified ONNX, AP-gated OpenVINO bf16 / int8 ONNX or TensorRT engine.

The OpenVINO path (parity, NNCF int8, the AP gate) is :mod:`flowclas_ros.export.reduced`; the
TensorRT one (build, the same AP gate, staged write) :mod:`flowclas_ros.export.engine`.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from flowclas_ros.export.onnx_export import ExportError, ExportReport, export_onnx
from flowclas_ros.export.verify import ExportVerificationError
from flowclas_ros.model.checkpoint_meta import CheckpointError, format_size
from flowclas_ros.model.export_meta import ModelMismatchError
from flowclas_ros.runtime import registry

_EPILOG = """examples:
  flowclas-export --checkpoint runs/a/checkpoint --format onnx --out model.onnx
  flowclas-export --checkpoint runs/a/checkpoint --format onnx --fp16 --out model_fp16.onnx
  flowclas-export --checkpoint runs/a/checkpoint --format engine --fp16 \
      --gate-data runs/a/data/test --out model.engine
  flowclas-export --checkpoint runs/a/checkpoint --format openvino --precision int8 \
      --calib-data runs/a/data/train --calib-n 32 --gate-data runs/a/data/test --out model-int8.onnx
  flowclas-export --checkpoint runs/a/checkpoint --format openvino --precision auto \
      --calib-data runs/a/data/train --gate-data runs/a/data/test --out model.onnx
The engine build writes model.onnx beside model.engine and the engine key to model.engine.json.
Reduced precisions (OpenVINO bf16 / int8 need --gate-data; a TensorRT --fp16 engine without it
is written ungated, with a warning) are written only when their pixel AP on --gate-data is within
0.005 of ONNX Runtime fp32 (else exit 1).
"""


def build_parser() -> argparse.ArgumentParser:
    """The command-line interface."""
    parser = argparse.ArgumentParser(
        prog="flowclas-export",
        description="Export a FlowCLAS checkpoint to ONNX (verified against torch) or a TensorRT engine.",
        epilog=_EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--checkpoint", required=True, type=Path, help="checkpoint directory")
    parser.add_argument("--format", required=True, choices=export_formats(), help="output kind")
    parser.add_argument("--out", required=True, type=Path, help="output file (.onnx or .engine)")
    parser.add_argument(
        "--input-size",
        nargs=2,
        type=int,
        metavar=("H", "W"),
        help="fixed input height and width (default: the checkpoint's preprocess.input_size)",
    )
    parser.add_argument("--dynamic-batch", action="store_true", help="make the batch axis dynamic")
    parser.add_argument(
        "--fp16",
        action="store_true",
        help="float16 backbone written into the ONNX (flow and scoring stay float32); "
        "what a strongly typed TensorRT 10/11 engine runs",
    )
    parser.add_argument("--fp16-flow", action="store_true", help="with --fp16, cast the flow to float16 too")
    ov = parser.add_argument_group("OpenVINO (--format openvino; writes an ONNX file)")
    ov.add_argument(
        "--precision",
        choices=openvino_precisions(),
        default=None,
        help="OpenVINO precision (default auto: bf16 where this CPU has it natively and it passes the AP "
        "gate, else int8 where it passes (needs --calib-data), else f32; fp32 = f32, deprecated)",
    )
    ov.add_argument("--calib-data", type=Path, help="int8: folder dataset of training images to calibrate on")
    ov.add_argument("--calib-n", type=int, default=32, help="int8: calibration images (default 32)")
    gated = parser.add_argument_group(
        "AP gate (--format openvino / engine): required for bf16 and int8, recommended for --fp16 engines"
    )
    gated.add_argument(
        "--gate-data",
        type=Path,
        help="labelled folder dataset of the AP gate (the test split); optional for fp32 engines",
    )
    gated.add_argument("--gate-n", type=int, help="use only the first N frames of --gate-data")
    engine = parser.add_argument_group("TensorRT engine (--format engine)")
    engine.add_argument("--workspace-mb", type=int, default=2048, help="builder workspace limit in MiB")
    engine.add_argument(
        "--version-compatible", action="store_true", help="engine runs on later TensorRT 10.x"
    )
    engine.add_argument(
        "--max-batch", type=int, default=None, help="largest batch of a --dynamic-batch engine (default 4)"
    )
    engine.add_argument("--device", default="cuda", help="CUDA device to build for (default cuda)")
    return parser


def export_formats() -> tuple[str, ...]:
    """``--format`` choices: the export formats the backend table names (onnx, openvino, engine)."""
    return tuple(dict.fromkeys(row.export_format for row in registry.TABLE.values() if row.export_format))


def openvino_precisions() -> tuple[str, ...]:
    """``--precision`` choices: the openvino row's precisions and the old spellings of them."""
    precisions = registry.spec("openvino").precisions
    return precisions + tuple(old for old, new in registry.OLD_SPELLINGS.items() if new in precisions)


def _check_gate_args(args: argparse.Namespace) -> None:
    if args.precision is not None:
        args.precision = registry.canonical_precision(args.precision)
    if args.format == "openvino" and args.precision is None:
        args.precision = "auto"
    if args.format != "openvino" and (args.precision is not None or args.calib_data is not None):
        flag = "--calib-data" if args.calib_data is not None else "--precision"
        raise ValueError(f"{flag} only applies to --format openvino")
    if args.format == "onnx" and (args.gate_data is not None or args.gate_n is not None):
        raise ValueError("--gate-data / --gate-n only apply to --format openvino and engine")
    if args.precision == "int8" and args.calib_data is None:
        raise ValueError("--precision int8 needs --calib-data ROOT (training images to calibrate on)")
    if args.gate_data is None:
        if args.format == "openvino" and args.precision not in ("f32", "auto"):
            raise ValueError(f"--precision {args.precision} needs --gate-data ROOT (labelled AP-gate images)")
        if args.format == "engine" and args.fp16:  # DESIGN.md's `--format engine --fp16` stays valid
            print(
                "flowclas-export: warning: this --fp16 engine is not AP-gated (no --gate-data); "
                "the TensorRT backend warns when it loads it",
                file=sys.stderr,
            )
        if args.gate_n is not None:
            raise ValueError("--gate-n needs --gate-data")
    for flag, path in (("--calib-data", args.calib_data), ("--gate-data", args.gate_data)):
        if path is not None and not path.is_dir():
            raise ValueError(f"{flag} {path}: not a dataset folder")
    if args.gate_n is not None and args.gate_n < 1:
        raise ValueError("--gate-n must be >= 1")


def _check_args(args: argparse.Namespace) -> None:
    _check_gate_args(args)
    if args.format in ("onnx", "openvino"):
        engine_flags = {
            "--version-compatible": args.version_compatible,
            "--max-batch": args.max_batch is not None,
        }
        used = [flag for flag, given in engine_flags.items() if given]
        if used:
            raise ValueError(f"{', '.join(used)} only apply to --format engine")
        if args.out.suffix != ".onnx":
            raise ValueError(f"--out {args.out}: an ONNX / OpenVINO export should end in .onnx")
    elif args.out.suffix == ".onnx":
        raise ValueError(f"--out {args.out}: an engine must not end in .onnx (the ONNX is written beside it)")
    if args.input_size is not None and min(args.input_size) <= 0:
        raise ValueError(f"--input-size {args.input_size}: sides must be positive")
    if args.workspace_mb <= 0:
        raise ValueError("--workspace-mb must be positive")
    if args.max_batch is not None and (args.max_batch < 1 or not args.dynamic_batch):
        raise ValueError("--max-batch needs --dynamic-batch and a value >= 1")
    if args.fp16_flow and not args.fp16:
        raise ValueError("--fp16-flow needs --fp16")
    if not args.checkpoint.is_dir():
        raise ValueError(f"--checkpoint {args.checkpoint}: not a checkpoint directory")


def _print_onnx(report: ExportReport) -> None:
    check = report.verification
    print(
        f"wrote {report.path} ({report.path.stat().st_size / 2**20:.1f} MiB): input "
        f"{format_size(report.input_size)} (padded {format_size(report.padded_size)}), "
        f"{'dynamic' if report.dynamic_batch else 'fixed'} batch, opset 17"
    )
    print(
        f"verified vs torch on {check.n_inputs} inputs: max abs diff {check.max_abs_diff:.3g}, "
        f"score range {check.score_range:.3g}, relative {check.relative_diff:.2g} "
        f"(allowed {check.tolerance:.3g}), "
        f"{report.seconds:.1f} s"
    )


def _precision(args: argparse.Namespace) -> str:
    return ("fp16-all" if args.fp16_flow else "fp16") if args.fp16 else "fp32"


def main(argv: list[str] | None = None) -> int:
    """Entry point of ``flowclas-export``; returns the exit status."""
    args = build_parser().parse_args(argv)
    try:
        _check_args(args)
        if args.format == "onnx":
            _print_onnx(
                export_onnx(
                    args.checkpoint,
                    args.out,
                    input_size=args.input_size,
                    dynamic_batch=args.dynamic_batch,
                    progress=True,
                    precision=_precision(args),
                )
            )
        elif args.format == "openvino":
            from flowclas_ros.export.reduced import export_openvino

            export_openvino(args, _print_onnx)
        else:
            from flowclas_ros.export.engine import export_engine

            export_engine(args, _precision(args), _print_onnx)
    except (
        CheckpointError,
        ExportError,
        ExportVerificationError,
        ModelMismatchError,
        ImportError,
        RuntimeError,
        ValueError,
        OSError,
    ) as exc:
        message = " ".join(str(exc).split())  # one line
        print(f"flowclas-export: error: {message}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
