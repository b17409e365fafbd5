"""The ``longreach`` command: a thin typer layer, one library call per command.

Bad input of any kind ends with one line on stderr (``longreach: error: ...``) and exit status 2;
an eval with failed cells exits 1; an interrupted eval says how to resume and exits 130.
"""

from __future__ import annotations

import sys
from pathlib import Path

import typer
from rich.console import Console
from rich.table import Table
from typer._click.exceptions import NoArgsIsHelpError

from longreach import params
from longreach.errors import LongreachError
from longreach.methods import METHODS
from longreach.methods.auto import cached_calibration
from longreach.models import ZOO, load_model
from longreach.report import render_report
from longreach.runner import SweepConfig, parse_depths, parse_lengths, run_sweep
from longreach.runner.export import export_instances
from longreach.tasks import TASKS

app = typer.Typer(
    add_completion=False,
    no_args_is_help=True,
    pretty_exceptions_enable=False,
    help="Measure how far a language model can read, and make it read further.",
)
out = Console()

MODEL = typer.Option(..., "--model", help="zoo name (see `longreach models`), HF model directory or .gguf file")
TASK = typer.Option(..., "--task", help="comma-separated task specs, e.g. passkey,niah_multikey_1")
LENGTHS = typer.Option(..., "--lengths", help="context lengths in tokens, e.g. 1k,2k,4k")
DEPTHS = typer.Option("0,0.5,1", "--depths", help="needle depths in [0, 1]")
SAMPLES = typer.Option(1, "--samples", min=1, help="samples per (task, method, length, depth)")
SEED = typer.Option(0, "--seed", help="base seed; every sample derives its own RNG from it")


@app.command("eval")
def eval_command(
    model: str = MODEL,
    task: str = TASK,
    lengths: str = LENGTHS,
    out_dir: Path = typer.Option(..., "--out", help="output folder (results.sqlite + report files)"),
    depths: str = DEPTHS,
    samples: int = SAMPLES,
    method: list[str] = typer.Option(["none"], "--method", help="method stack spec; repeat to compare"),
    resume: bool = typer.Option(False, "--resume", help="continue a run in --out, skipping finished cells"),
    seed: int = SEED,
    dtype: str = typer.Option("bf16", "--dtype", help="bf16 | fp32 | fp16"),
    threshold: float = typer.Option(0.85, "--threshold", help="score threshold for effective length"),
    quiet: bool = typer.Option(False, "--quiet", help="no progress bar"),
    interleave: bool = typer.Option(False, "--interleave", help="run all methods on a sample back to back"),
    reuse_prefix: bool = typer.Option(
        False,
        "--reuse-prefix",
        help="start from the previous cell's KV cache where prompts agree (faster; prefill times then cover "
        "only the recomputed part)",
    ),
    question_mode: str = typer.Option(
        "aware",
        "--question-mode",
        help="aware (a cache method compresses after reading the question) and/or agnostic (the context is "
        "compressed first, then the question is read), comma-separated",
    ),
) -> int:
    """Run a sweep (tasks x methods x lengths x depths x samples) and write the report."""
    config = SweepConfig(
        model=model,
        tasks=tuple(task.split(",")),
        lengths=parse_lengths(lengths),
        out=out_dir,
        methods=tuple(method),
        depths=parse_depths(depths),
        samples=samples,
        seed=seed,
        dtype=dtype,
        resume=resume,
        threshold=threshold,
        interleave=interleave,
        reuse_prefix=reuse_prefix,
        question_modes=tuple(m.strip() for m in question_mode.split(",")),
    )
    try:
        summary = run_sweep(config, show_progress=not quiet)
    except KeyboardInterrupt:
        print(f"longreach: interrupted; finished cells are saved in {out_dir}. Rerun with --resume.", file=sys.stderr)
        return 130
    out.print((out_dir / "report.md").read_text().split("## Figures")[0].rstrip())
    out.print(f"\n{summary.ran} cells run, {summary.skipped} already done, {summary.failed} failed")
    out.print(f"report: {(out_dir / 'report.html').resolve()}")
    return 1 if summary.failed else 0


@app.command("report")
def report_command(
    folder: Path = typer.Argument(..., help="an output folder of `longreach eval`"),
    threshold: float | None = typer.Option(None, "--threshold", help="default: the run's threshold"),
) -> int:
    """Re-render report.json / .md / .html and the figures from a results store."""
    path = render_report(folder, threshold=threshold)
    out.print(f"report: {path.resolve()}")
    return 0


@app.command("generate")
def generate_command(
    model: str = MODEL,
    task: str = TASK,
    lengths: str = LENGTHS,
    out_file: Path = typer.Option(..., "--out", help="the JSONL file to write"),
    depths: str = DEPTHS,
    samples: int = SAMPLES,
    seed: int = SEED,
) -> int:
    """Write the instances an eval with the same flags would run (one JSON object a line)."""
    config = SweepConfig(
        model=model,
        tasks=tuple(task.split(",")),
        lengths=parse_lengths(lengths),
        out=out_file.parent,
        depths=parse_depths(depths),
        samples=samples,
        seed=seed,
    )
    count = export_instances(config, out_file)
    out.print(f"{count} instances written to {out_file}")
    return 0


@app.command("calibrate")
def calibrate_command(
    model: str = MODEL,
    target: str = typer.Option(..., "--target", help="the length to read, e.g. 32k"),
    dtype: str = typer.Option("bf16", "--dtype", help="bf16 | fp32 | fp16"),
    seed: int = SEED,
) -> int:
    """Pick a context-extension method for a target length from a short calibration on the model."""
    (length,) = parse_lengths(target)
    result = cached_calibration(load_model(model, dtype), length, seed)
    table = Table("candidate", "answer NLL (nats/token)")
    for spec, nll in sorted(result.nll.items(), key=lambda item: item[1]):
        table.add_row(spec, f"{nll:.4f}")
    out.print(table)
    out.print(f"chosen: {result.chosen}   (reuse with --method {result.chosen})")
    return 0


@app.command("moa-plan")
def moa_plan_command(
    model: str = MODEL,
    out_file: Path = typer.Option(..., "--out", help="the plan JSON to write (use it as moa:plan=FILE)"),
    keep: float = typer.Option(0.5, "--keep", help="mean fraction of the KV cache kept at the target lengths"),
    targets: str = typer.Option("4k,8k", "--targets", help="lengths the plan must fit the budget at"),
    lengths: str = typer.Option("1k,2k", "--lengths", help="calibration prompt lengths for the gradient profile"),
    prompts: int = typer.Option(4, "--prompts", min=1, help="calibration prompts per length"),
    sink: int = typer.Option(64, "--sink", min=0, help="global sink tokens every head keeps"),
    dtype: str = typer.Option("bf16", "--dtype", help="bf16 | fp32 | fp16"),
    seed: int = SEED,
) -> int:
    """Profile a model's attention heads (gradients) and search MoA per-head elastic windows for a cache budget."""
    from longreach.methods.attention.moa_profile import make_plan

    plan = make_plan(
        load_model(model, dtype), keep, parse_lengths(targets), parse_lengths(lengths), prompts, sink, seed
    )
    out_file.parent.mkdir(parents=True, exist_ok=True)
    plan.save(out_file)
    kept = ", ".join(f"{length}: {fraction:.3f}" for length, fraction in plan.meta["kept_fraction"].items())
    out.print(f"plan written to {out_file} (cache kept at {kept}); use --method moa:plan={out_file}")
    return 0


@app.command("models")
def models_command() -> int:
    """List the model zoo (local paths to HF directories and .gguf files work too)."""
    table = Table("name", "native window", "description", "installed")
    for name, entry in ZOO.items():
        table.add_row(
            name, str(entry.native_context_length), entry.summary, "yes" if entry.installed() else entry.install
        )
    out.print(table)
    return 0


@app.command("methods")
def methods_command() -> int:
    """List the registered methods and their parameters."""
    table = Table("name", "kind", "description", "parameters (default)")
    for name, cls in METHODS.items():
        fields = ", ".join(f"{n}={d}" for n, d, _ in params.describe_fields(cls)) or "-"
        table.add_row(name, cls.kind, cls.summary + (f" [{cls.paper}]" if cls.paper else ""), fields)
    out.print(table)
    return 0


@app.command("tasks")
def tasks_command() -> int:
    """List the registered tasks, their family and knobs."""
    table = Table("name", "family", "description", "knobs (default)")
    for name, entry in TASKS.items():
        knobs = ", ".join(f"{n}={entry.defaults.get(n, d)}" for n, d, _ in params.describe_fields(entry.family))
        table.add_row(name, entry.family.family, entry.summary, knobs)
    out.print(table)
    return 0


def _fail(message: str) -> None:
    print(f"longreach: error: {message}", file=sys.stderr)
    sys.exit(2)


def main(argv: list[str] | None = None) -> None:
    """Console entry point: run the command, turning every user error into one line and an exit status."""
    try:
        status = app(args=argv, standalone_mode=False, prog_name="longreach")
    except NoArgsIsHelpError as exc:
        print(exc.format_message())
        sys.exit(0)
    except LongreachError as exc:
        _fail(str(exc))
    except typer.TyperException as exc:  # bad option values, unknown options, missing arguments
        _fail(" ".join(exc.format_message().split()))
    except typer.Abort:
        sys.exit(130)
    except typer.Exit as exc:
        sys.exit(exc.exit_code)
    sys.exit(status if isinstance(status, int) else 0)


if __name__ == "__main__":
    main()
