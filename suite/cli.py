"""The `bitsweep` command: train, sweep, wandb-sweep, report, pack, unpack, repair-journal.

Exit codes: 0 done (a diverged run is a result, so 0 too), 2 bad input (nothing written),
1 a crash.
"""

from __future__ import annotations

import argparse
import json
import sys
import traceback
from pathlib import Path
from typing import Any

import yaml

from suite.run.config import WANDB_MODES, ConfigError, RunConfig, config_fields
from suite.yamlfile import YamlFileError, read_yaml

_RUNS = "runs"        # root of run directories and of the default study storage


class _HelpFormatter(argparse.HelpFormatter):
    """Fills in ``%(figure_formats)s`` and the RunConfig flags' help only when a help text is
    printed: the formats are suite.report.style.FORMATS, and importing it loads the whole report
    (matplotlib); a flag's meaning, choices and default are read from the RunConfig fields."""

    def _get_help_string(self, action: argparse.Action) -> str | None:
        text = super()._get_help_string(action)
        if text == f"RunConfig.{action.dest}":  # as _add_config_flags left it
            from suite.run.config import flag_help

            return flag_help(action.dest).replace("%", "%%")
        if text and "%(figure_formats)s" in text:
            from suite.report.style import FORMATS

            text = text.replace("%(figure_formats)s", ",".join(FORMATS))
        return text


def _parse_value(field: str, kind: str, text: str) -> Any:
    if text.lower() in ("null", "none") and "None" in kind:
        return None
    base = kind.replace(" | None", "")
    try:
        if base == "int":
            return int(text)
        if base == "float":
            return float(text)
    except ValueError:
        kind = "an integer" if base == "int" else "a number"
        raise ConfigError(f"{field}={text!r}: must be {kind}") from None
    if base == "bool":
        if text.lower() in ("true", "1", "yes"):
            return True
        if text.lower() in ("false", "0", "no"):
            return False
        raise ConfigError(f"{field}={text!r}: must be true or false")
    if base.startswith("tuple"):
        return tuple(t for t in text.split(",") if t)
    if base.startswith("dict"):  # a YAML (or JSON) mapping: --model-args '{n_layer: 2}'
        try:
            return yaml.safe_load(text)
        except yaml.YAMLError as err:
            raise ConfigError(f"{field}={text!r}: not a YAML/JSON mapping ({err})") from None
    return text


def _add_config_flags(parser: argparse.ArgumentParser) -> None:
    for name, kind in config_fields().items():
        parser.add_argument(f"--{name.replace('_', '-')}", dest=name, metavar=kind.upper()
                            .replace(" | NONE", "?"), default=None,
                            help=f"RunConfig.{name}")  # _HelpFormatter writes it out


def config_from_args(args: argparse.Namespace) -> RunConfig:
    values: dict[str, Any] = {}
    if getattr(args, "config", None):
        path = Path(args.config)
        try:
            loaded, _ = read_yaml(path)  # a key given twice or a binary file: refused
        except (OSError, YamlFileError) as err:
            raise ConfigError(f"--config {path}: {err}") from None
        if not isinstance(loaded, dict):
            raise ConfigError(f"--config {path}: expected a mapping of RunConfig fields")
        values.update(loaded)
    for name, kind in config_fields().items():
        text = getattr(args, name, None)
        if text is not None:
            values[name] = _parse_value(name, kind, text)
    return RunConfig.from_dict(values)


def cmd_train(args: argparse.Namespace) -> int:
    from suite.run.train import train

    config = config_from_args(args)
    result = train(config, args.out, wandb_dir=args.wandb_dir, overwrite=args.overwrite)
    keys = ("model", "precision", "val_acc", "test_acc", "diverged", "fit_seconds")
    print(json.dumps({k: result.get(k) for k in keys}))
    return 0


def cmd_sweep(args: argparse.Namespace) -> int:
    from suite.sweep import SweepInterrupted, run_sweep
    from suite.sweep.driver import undone_line
    from suite.sweep.spec import load_spec

    spec = load_spec(args.spec, max_cells=args.max_cells)  # validated whole before anything is created
    _check_sweep_limits(spec, args)
    try:
        summary = run_sweep(spec, workers=args.workers, storage=args.storage,
                            n_trials=args.n_trials, runs_root=Path(args.runs),
                            threads=args.threads, grace=args.grace, extend=args.extend)
    except SweepInterrupted as stop:
        print(json.dumps(stop.summary))
        print("bitsweep sweep: interrupted; finished trials are stored. Run the same command "
              "again to resume.", file=sys.stderr)
        return 128 + stop.signum
    print(json.dumps(summary))
    undone = undone_line(summary, args.argv)  # a half-done study must not look done
    if undone:
        print(undone, file=sys.stderr)
        return 1
    return 0


def _check_sweep_limits(spec: Any, args: argparse.Namespace) -> None:
    """What this machine must take of a sweep, checked before anything is created: the threads
    asked for (--threads, or a cell's threads) and the depth of the study's folder."""
    from suite.run.cores import check_threads
    from suite.sweep.spec import check_study_paths

    check_threads(args.threads, "--threads")
    for threads in sorted({cell.threads for cell in spec.cells if cell.threads}):
        check_threads(threads)
    check_study_paths(spec, Path(args.runs))


def cmd_wandb_sweep(args: argparse.Namespace) -> int:
    from suite.sweep.spec import load_spec
    from suite.sweep.wandb import wandb_sweep_configs

    configs = wandb_sweep_configs(load_spec(args.spec), runs_root=Path(args.runs))
    if not args.out:
        print(yaml.safe_dump_all(configs, sort_keys=False), end="")
        return 0
    out = Path(args.out)
    # W&B runs one grid per sweep: a union of grids is one file (and one sweep) per grid.
    paths = [out] if len(configs) == 1 else [
        out.with_name(f"{out.stem}-grid{i}{out.suffix}") for i in range(len(configs))]
    for path, config in zip(paths, configs):
        path.write_text(yaml.safe_dump(config, sort_keys=False))
        print(f"wrote {path}; run it with: wandb sweep {path} && wandb agent <sweep-id>")
    return 0


def cmd_agent_run(args: argparse.Namespace, extra: list[str]) -> int:
    """The program a W&B agent calls: one configuration from --key=value flags."""
    from suite.sweep.wandb import agent_run

    result = agent_run(args.spec, extra, runs_root=Path(args.runs), storage=args.storage)
    print(json.dumps({k: result.get(k) for k in ("model", "precision", "val_acc", "diverged")}))
    return 0


def cmd_report(args: argparse.Namespace) -> int:
    from suite.report.cli import report_command

    argv = sys.argv
    if argv[1:2] != ["report"]:  # called as main([...]) (tests, nox): rebuild the command line
        argv = ["bitsweep", "report", args.target]
        argv += ["--storage", args.storage] if args.storage else []
        argv += ["--out", args.out] if args.out else []
        argv += ["--runs", args.runs] if args.runs != _RUNS else []
        argv += ["--formats", args.formats] if args.formats else []
    path = report_command(args.target, storage=args.storage,
                          out_root=Path(args.out) if args.out else None,
                          runs_root=Path(args.runs), argv=argv, formats=args.formats,
                          wandb=args.wandb, wandb_mode=args.wandb_mode)
    print(f"wrote {path}")
    return 0


def cmd_pack(args: argparse.Namespace) -> int:
    from suite.pack.rundir import pack_run

    print(json.dumps(pack_run(Path(args.run_dir), Path(args.out) if args.out else None)))
    return 0


def cmd_unpack(args: argparse.Namespace) -> int:
    from suite.pack.rundir import unpack_file

    print(json.dumps(unpack_file(Path(args.file), Path(args.out) if args.out else None)))
    return 0


def cmd_repair_journal(args: argparse.Namespace) -> int:
    from suite.sweep.repair import repair_journal

    path = args.path
    done = repair_journal(path)
    if done is None:
        print(f"{path}: every record is intact and every stored result its own trial's; "
              "nothing to repair")
        return 0
    print(f"{path}: repaired, {done.kept} records kept"
          + (f"; recovered the whole record at the end of line(s) {_lines(done.salvaged)}"
             if done.salvaged else "")
          + (f"; left out damaged line(s) {_lines(done.left_out)}" if done.left_out else "")
          + f". The file as it was: {done.backup}")
    if done.requeued:  # every other trial keeps its records, config and result
        print(f"failed as damaged, their cells run again on the next `bitsweep sweep`: "
              f"{'; '.join(done.requeued)}")
    return 0


def _lines(numbers: tuple[int, ...]) -> str:
    return ", ".join(map(str, numbers))


def build_parser() -> argparse.ArgumentParser:
    from suite.sweep.queue import GRACE_SECONDS  # light: Optuna loads only when a sweep runs
    from suite.sweep.spec import MAX_CELLS, SweepSpec

    parser = argparse.ArgumentParser(prog="bitsweep", description=__doc__.splitlines()[0])
    sub = parser.add_subparsers(dest="command", required=True)

    p = sub.add_parser("train", help="train one configuration; writes OUT/result.json",
                       formatter_class=_HelpFormatter)
    p.add_argument("--config", help="YAML file of RunConfig fields (flags override it)")
    p.add_argument("--out", default=f"{_RUNS}/train", help="run directory (default %(default)s)")
    p.add_argument("--wandb-dir", default=None, help="where W&B writes (default: the run dir)")
    p.add_argument("--overwrite", action="store_true",
                   help="replace a finished run in OUT (kept until the new run has finished)")
    _add_config_flags(p)
    p.set_defaults(func=cmd_train)

    p = sub.add_parser("sweep", help="run a study from a sweep file with Optuna")
    p.add_argument("spec", help="sweeps/<study>.yaml")
    p.add_argument("--workers", type=int, default=None,
                   help="worker processes on this machine (default: the spec's workers, or "
                        f"{SweepSpec.workers})")
    p.add_argument("--storage", default=None, help="Optuna storage URL (default: file under runs/)")
    p.add_argument("--n-trials", type=int, default=None, help="stop after M trials on this machine")
    p.add_argument("--runs", default=_RUNS, help="root of run directories (default %(default)s/)")
    p.add_argument("--threads", type=int, default=None,
                   help="torch threads per worker (at most this machine's cores)")
    p.add_argument("--max-cells", type=int, default=None,
                   help="the most cells the grid may have (default: the spec's max_cells, else "
                        f"{MAX_CELLS:,}); a larger grid is refused before any cell is built")
    p.add_argument("--grace", type=float, default=GRACE_SECONDS,
                   help="seconds without a heartbeat before another machine's trial counts as "
                        "lost and is queued again (default %(default)g)")
    p.add_argument("--extend", action="store_true",
                   help="add this file's runs to a study of the same name that was made with "
                        "another grid (without it, such a study is refused; its report lists "
                        "every spec)")
    p.set_defaults(func=cmd_sweep)

    p = sub.add_parser("wandb-sweep", help="export a W&B sweep config for the same study")
    p.add_argument("spec")
    p.add_argument("--out", default=None, help="write the YAML here (default: stdout)")
    p.add_argument("--runs", default=_RUNS)
    p.set_defaults(func=cmd_wandb_sweep)

    p = sub.add_parser("agent-run", help="(called by `wandb agent`) train one sweep configuration")
    p.add_argument("spec")
    p.add_argument("--runs", default=_RUNS)
    p.add_argument("--storage", default=None, help="Optuna storage to record the run in")
    p.set_defaults(func=cmd_agent_run, takes_extra=True)

    p = sub.add_parser("report", help="figures, tables and claims for a study",
                       formatter_class=_HelpFormatter)
    p.add_argument("target", help="sweeps/<study>.yaml, or a study name with --storage")
    p.add_argument("--storage", default=None)
    p.add_argument("--out", default=None,
                   help="reports root: writes OUT/<study>/ (default: RUNS/<study>/report/, beside "
                        "the study's runs; the committed reference reports live in reports/)")
    p.add_argument("--runs", default=_RUNS)
    p.add_argument("--formats", default=None,
                   help="figure formats, comma-separated (default %(figure_formats)s)")
    p.add_argument("--wandb", action="store_true",
                   help="also log the results and claims tables and the figures as one W&B run "
                        "(job type report) in the study's project, beside its runs")
    p.add_argument("--wandb-mode", choices=WANDB_MODES, default=None,
                   help="mode of that run (default: the spec's wandb mode, else offline; offline "
                        "runs go to RUNS/<study>/wandb/); implies --wandb")
    p.set_defaults(func=cmd_report)

    p = sub.add_parser("pack", help="store a run's quantised weights at their real bit size")
    p.add_argument("run_dir")
    p.add_argument("--out", default=None, help="packed file (default RUN_DIR/model.bsw)")
    p.set_defaults(func=cmd_pack)

    p = sub.add_parser("unpack", help="rebuild a model from a packed file and check it loads")
    p.add_argument("file")
    p.add_argument("--out", default=None, help="also write the dequantised weights (safetensors)")
    p.set_defaults(func=cmd_unpack)

    p = sub.add_parser("repair-journal", help="rewrite a damaged journal file with every intact "
                       "record, keeping the original as JOURNAL.bak-<time> (stop its sweeps first)")
    p.add_argument("path", help="the study's journal file, e.g. runs/<study>/optuna.journal")
    p.set_defaults(func=cmd_repair_journal)
    return parser


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args, extra = parser.parse_known_args(argv)
    args.argv = list(sys.argv[1:] if argv is None else argv)  # for a command that says how to resume
    if extra and not getattr(args, "takes_extra", False):
        parser.error(f"unrecognized arguments: {' '.join(extra)}")
    try:
        if getattr(args, "takes_extra", False):
            return args.func(args, extra)
        return args.func(args)
    except (ConfigError, ValueError, FileNotFoundError) as err:
        if args.command == "train" and not isinstance(err, ConfigError):
            # train validates all its input into ConfigErrors before writing anything; any other
            # error comes from inside the fit: a crash (exit 1), not bad input.
            traceback.print_exc()
            return 1
        # Bad input: say what and how to fix it, write nothing, exit 2 (like argparse).
        print(f"bitsweep {args.command}: error: {err}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("bitsweep: interrupted; finished runs are kept", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
