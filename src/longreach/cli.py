"""The ``longreach`` command: a thin typer layer, one library call per command.

Bad input of any kind ends with one line on stderr (``longreach: error: ...``) and exit status 2;
an eval with failed cells exits 1; an interrupted eval says how to resume and exits 130.
"""

from __future__ import annotations

import sys
import warnings
from pathlib import Path

import typer
from rich.console import Console
from rich.table import Table
from typer._click.exceptions import NoArgsIsHelpError

from longreach import params
from longreach.backends import BACKENDS
from longreach.errors import LongreachError, LongreachWarning
from longreach.methods import METHODS, parse_stack
from longreach.methods.auto import cached_calibration
from longreach.methods.base import KIND_ORDER
from longreach.models import ZOO, load_model
from longreach.report import render_report
from longreach.results import STORE_NAME
from longreach.runner import Grid, RunConfig, parse_depths, parse_lengths, run_sweep
from longreach.runner.executors import EXECUTORS
from longreach.runner.export import export_instances
from longreach.serve import ServeConfig, run_server
from longreach.study import load_study, recorded_study, report_study, restore_study, run_study
from longreach.tasks import SUITES, TASKS, parse_task, suite_tasks
from longreach.train.loop import TrainConfig, train
from longreach.train.recipe import recipe_rows
from longreach.weights import codec as weight_codec
from longreach.weights.model import compress_model

app = typer.Typer(
    add_completion=False,
    no_args_is_help=True,
    pretty_exceptions_enable=False,
    help="Measure how far a language model can read, and make it read further.",
)
out = Console(markup=False, highlight=False)  # reports hold brackets ("none [chat]") that are text, not markup

MODEL = typer.Option(..., "--model", help="zoo name (see `longreach models`), HF model directory or .gguf file")
TASK = typer.Option("", "--task", help="comma-separated task specs, e.g. passkey,niah_multikey_1")
SUITE = typer.Option(
    "", "--suite", help="comma-separated suites (see `longreach tasks`), e.g. ruler-lite, taxonomy, longbench:data=DIR"
)
LENGTHS = typer.Option(..., "--lengths", help="context lengths in tokens, e.g. 1k,2k,4k")
DEPTHS = typer.Option("0,0.5,1", "--depths", help="needle depths in [0, 1]")
SAMPLES = typer.Option(1, "--samples", min=1, help="samples per (task, method, length, depth)")
SEED = typer.Option(0, "--seed", help="base seed; every sample derives its own RNG from it")
DTYPE = typer.Option("bf16", "--dtype", help="bf16 | fp32 | fp16")
PROMPT = typer.Option("auto", "--prompt", help="auto (the chat template when the model has one) | raw | chat")


@app.command("eval")
def eval_command(
    model: str = MODEL,
    task: str = TASK,
    suite: str = SUITE,
    lengths: str = LENGTHS,
    out_dir: Path = typer.Option(..., "--out", help="output folder (results.sqlite + report files)"),
    depths: str = DEPTHS,
    samples: int = SAMPLES,
    method: list[str] = typer.Option(["none"], "--method", help="method stack spec; repeat to compare"),
    question_mode: str = typer.Option("aware", "--question-mode", help="aware and/or agnostic, comma-separated"),
    prompt: str = PROMPT,
    backend: str = typer.Option(
        "hf", "--backend", help="hf | openai:base_url=URL[:api=chat] | kvpress (`longreach backends`)"
    ),
    executor: str = typer.Option("local", "--executor", help="local[:shard=i/n] | ray[:workers=N:address=A]"),
    dtype: str = DTYPE,
    device: str = typer.Option("cpu", "--device", help="hf backend: cpu | cuda | cuda:N"),
    seed: int = SEED,
    resume: bool = typer.Option(False, "--resume", help="continue a run in --out, skipping finished cells"),
    resume_anyway: bool = typer.Option(False, "--resume-anyway", help="resume even if code or settings changed"),
    reuse_prefix: bool = typer.Option(False, "--reuse-prefix", help="continue kept reads where prompts agree"),
    interleave: bool = typer.Option(False, "--interleave", help="run all methods on a sample back to back"),
    threshold: float = typer.Option(0.85, "--threshold", help="score threshold for effective length"),
    quiet: bool = typer.Option(False, "--quiet", help="no progress bar"),
) -> int:
    """Run a grid (tasks x methods x lengths x depths x samples x question modes) and write the report."""
    grid = Grid(
        _tasks(task, suite),
        parse_lengths(lengths),
        tuple(method),
        parse_depths(depths),
        samples,
        tuple(m.strip() for m in question_mode.split(",")),
    )
    config = RunConfig(
        grid, out_dir, model, dtype, device, seed, backend, executor, prompt, reuse_prefix, interleave, resume,
        resume_anyway, threshold,
    )  # fmt: skip
    return _run(config, quiet)


@app.command("ppl")
def ppl_command(
    model: str = MODEL,
    text: Path = typer.Option(..., "--text", help="a local plain-text file (a book, docs turned to text)"),
    lengths: str = LENGTHS,
    out_dir: Path = typer.Option(..., "--out", help="output folder (results.sqlite + report files)"),
    method: list[str] = typer.Option(["none"], "--method", help="method stack spec; repeat to compare"),
    mode: str = typer.Option("full", "--mode", help="full (one pass over each span) | sliding (windows)"),
    window: int = typer.Option(0, "--window", help="sliding: tokens a window reads (0: the native window)"),
    stride: int = typer.Option(0, "--stride", help="sliding: tokens a window moves (0: half the window)"),
    bucket: int = typer.Option(1024, "--bucket", help="tokens per position bucket of the loss-by-position curve"),
    samples: int = typer.Option(1, "--samples", min=1, help="consecutive spans of the file per length"),
    dtype: str = DTYPE,
    device: str = typer.Option("cpu", "--device", help="cpu | cuda | cuda:N"),
    resume: bool = typer.Option(False, "--resume", help="continue a run in --out, skipping finished cells"),
    resume_anyway: bool = typer.Option(False, "--resume-anyway", help="resume even if code or settings changed"),
    quiet: bool = typer.Option(False, "--quiet", help="no progress bar"),
) -> int:
    """Perplexity over a local long text at each length, under each method stack (full context or sliding window):
    perplexity per length and loss by token position, stored and reported like every run."""
    spec = parse_task(f"text:path={text}:mode={mode}:window={window}:stride={stride}:bucket={bucket}").spec
    grid = Grid((spec,), parse_lengths(lengths), tuple(method), (0.0,), samples)
    config = RunConfig(grid, out_dir, model, dtype, device, prompt="raw", resume=resume, resume_anyway=resume_anyway)
    return _run(config, quiet)


def _run(config: RunConfig, quiet: bool) -> int:
    """Run a sweep, print its report's tables; 1 when cells failed, 130 when interrupted."""
    try:
        summary = run_sweep(config, show_progress=not quiet)
    except KeyboardInterrupt:
        message = f"longreach: interrupted; finished cells are saved in {config.out}. Rerun with --resume."
        print(message, file=sys.stderr)
        return 130
    out.print((config.out / "report.md").read_text().split("## Figures")[0].rstrip())
    out.print(f"\n{summary.ran} cells run, {summary.skipped} already done, {summary.failed} failed")
    out.print(f"report: {(config.out / 'report.html').resolve()}")
    return 1 if summary.failed else 0


@app.command("report")
def report_command(
    folders: list[Path] = typer.Argument(..., help="output folders of `longreach eval` (several are merged)"),
    out_dir: Path | None = typer.Option(None, "--out", help="where to write (default: the run, or merged_A+B)"),
    baseline: str | None = typer.Option(None, "--baseline", help="a method spec every row is compared with"),
    threshold: float | None = typer.Option(None, "--threshold", help="default: the run's threshold"),
) -> int:
    """Re-render the report from one or more results stores (merged), with 95% intervals and baseline ratios."""
    if out_dir is None and len(folders) > 1:
        out_dir = folders[0].parent / ("merged_" + "+".join(f.name for f in folders))
    path = render_report(folders, out=out_dir, threshold=threshold, baseline=_canonical(baseline))
    out.print(path.with_name("report.md").read_text().split("## Figures")[0].rstrip())
    out.print(f"report: {path.resolve()}")
    return 0


study_app = typer.Typer(no_args_is_help=True, help="Studies: sweeps as data (studies/*.yaml).")
app.add_typer(study_app, name="study")


@study_app.command("run")
def study_run_command(
    file: Path = typer.Argument(..., help="a study file, e.g. studies/kv_cache.yaml"),
    out_dir: Path = typer.Option(..., "--out", help="the study's folder (one store per stage; resumable)"),
    stages: str = typer.Option("", "--stages", help="comma-separated stage names (default: all, in order)"),
    executor: str = typer.Option("local", "--executor", help="local[:shard=i/n] | ray[:workers=N]"),
    device: str = typer.Option("cpu", "--device", help="cpu | cuda | cuda:N"),
    wait: float = typer.Option(3600.0, "--wait", help="seconds to wait for a pruning stage's source to finish"),
    resume_anyway: bool = typer.Option(False, "--resume-anyway", help="resume stages run with other code or settings"),
    models: str = typer.Option("", "--models", help="comma-separated: only these models' runs (base, trained names)"),
    quiet: bool = typer.Option(False, "--quiet", help="no progress bar"),
) -> int:
    """Run a study's stages (resumable; prune rules applied), then write its merged report."""
    study = load_study(file)
    names = [s.strip() for s in stages.split(",") if s.strip()] or None
    chosen_models = [m.strip() for m in models.split(",") if m.strip()] or None
    options = dict(
        executor=executor,
        device=device,
        show_progress=not quiet,
        wait=wait,
        resume_anyway=resume_anyway,
        models=chosen_models,
    )
    outcomes = run_study(study, out_dir, stages=names, **options)
    for outcome in outcomes:
        pruned = f", pruned {', '.join(outcome.pruned)}" if outcome.pruned else ""
        out.print(f"{outcome.name}: {outcome.summary.ran} cells run, {outcome.summary.failed} failed{pruned}")
    path = report_study(study, out_dir)
    out.print(f"report: {path.resolve()}")
    return 1 if any(o.summary.failed for o in outcomes) else 0


@study_app.command("report")
def study_report_command(
    folder: Path = typer.Argument(..., help="a study's folder (the --out of `study run`)"),
    file: Path | None = typer.Option(None, "--study", help="the study file (default: the one recorded)"),
    out_dir: Path | None = typer.Option(None, "--out", help="where to write (default: the study's folder)"),
    baseline: str | None = typer.Option(None, "--baseline", help="default: the study's baseline"),
    heatmaps: bool = typer.Option(True, "--heatmaps/--no-heatmaps", help="draw a depth x length heatmap per row"),
) -> int:
    """Merge every stage of a study into one report."""
    study = load_study(file) if file is not None else recorded_study(folder)
    path = report_study(study, folder, report_out=out_dir, baseline=_canonical(baseline), heatmaps=heatmaps)
    out.print(path.with_name("report.md").read_text().split("## Figures")[0].rstrip())
    out.print(f"report: {path.resolve()}")
    return 0


@study_app.command("restore")
def study_restore_command(
    report: Path = typer.Argument(..., help="a study's committed report.json (or its folder)"),
    out_dir: Path = typer.Option(..., "--out", help="the study folder to write (then `study run` resumes it)"),
) -> int:
    """Rebuild a study's folder (its stages' stores, training records) from its report, to go on with it."""
    written = restore_study(report, out_dir)
    stores = [p for p in written if p.name == STORE_NAME]
    out.print(f"restored {len(stores)} stores and {len(written) - len(stores)} training records into {out_dir}")
    out.print(f"next: longreach study run STUDY.yaml --out {out_dir} (add --resume-anyway if the code changed)")
    return 0


@app.command("serve")
def serve_command(
    model: str = MODEL,
    method: list[str] = typer.Option(["none"], "--method", help="method stack spec; repeat to serve several"),
    host: str = typer.Option("127.0.0.1", "--host", help="address to bind (0.0.0.0 exposes the server)"),
    port: int = typer.Option(8000, "--port", help="port to listen on"),
    max_concurrency: int = typer.Option(8, "--max-concurrency", help="requests running at once"),
    max_queue: int = typer.Option(64, "--max-queue", help="requests waiting before 429"),
    kv_budget_mb: float = typer.Option(2048.0, "--kv-budget-mb", help="KV cache bytes admission keeps within"),
    api_key: str = typer.Option("", "--api-key", help="require Authorization: Bearer KEY"),
    prompt: str = typer.Option("auto", "--prompt", help="chat API: auto (template if any) | raw | chat"),
    dtype: str = DTYPE,
    device: str = typer.Option("cpu", "--device", help="cpu | cuda | cuda:N"),
    timeout: float = typer.Option(600.0, "--timeout", help="seconds a request may take (queued and running)"),
    max_body_mb: float = typer.Option(16.0, "--max-body-mb", help="largest request body"),
    seed: int = typer.Option(0, "--seed", help="sampling seed of requests that give none"),
) -> int:
    """Serve method stacks behind an OpenAI-compatible API (one model id per stack)."""
    config = ServeConfig(
        model, tuple(method), host, port, max_concurrency, max_queue, kv_budget_mb, api_key, prompt, dtype, device,
        timeout, max_body_mb, seed,
    )  # fmt: skip
    run_server(config)
    return 0


@app.command("train")
def train_command(
    model: str = MODEL,
    recipe: str = typer.Option(..., "--recipe", help="recipe spec, e.g. abf:theta=500000 (`longreach recipes`)"),
    data: str = typer.Option(..., "--data", help="tasks:niah_multikey_1,vt | text:DIR | short:passkey, joined by +"),
    length: str = typer.Option(..., "--length", help="training length in tokens, e.g. 4k"),
    steps: int = typer.Option(..., "--steps", help="optimizer steps"),
    out_dir: Path = typer.Option(..., "--out", help="output folder: model/ (load it with eval), train.json"),
    lora: str = typer.Option("r=16", "--lora", help="r=16[:alpha=32:dropout=0.05] | none (full fine-tuning)"),
    lr: float = typer.Option(0.0, "--lr", help="peak learning rate (0: 2e-4 with LoRA, 2e-5 without)"),
    batch_tokens: str = typer.Option("8k", "--batch-tokens", help="tokens per optimizer step (accumulated)"),
    prompt: str = typer.Option("auto", "--prompt", help="format of task prompts: auto | raw | chat"),
    dtype: str = DTYPE,
    device: str = typer.Option("cpu", "--device", help="cpu | cuda | cuda:N"),
    seed: int = typer.Option(0, "--seed", help="data order and LoRA init; task samples use seed 10^9 + this"),
    save_every: int = typer.Option(10, "--save-every", help="steps between checkpoints"),
    resume: bool = typer.Option(False, "--resume", help="continue from the newest checkpoint in --out"),
    grad_checkpointing: bool = typer.Option(False, "--grad-checkpointing", help="recompute activations (memory)"),
    quiet: bool = typer.Option(False, "--quiet", help="no progress bar"),
) -> int:
    """Train a model to read further with a long-context recipe; writes OUT/model for `longreach eval --model`."""
    config = TrainConfig(
        model, recipe, data, _one_length(length, "--length"), steps, out_dir, lora, lr,
        _one_length(batch_tokens, "--batch-tokens"), dtype, device, seed, save_every, resume, prompt,
        grad_checkpointing, quiet,
    )  # fmt: skip
    try:
        summary = train(config)
    except KeyboardInterrupt:
        print(f"longreach: interrupted; checkpoints are in {out_dir}. Rerun with --resume.", file=sys.stderr)
        return 130
    out.print(
        f"{summary.steps} steps, {summary.tokens:,} tokens in {summary.seconds:.0f} s "
        f"({summary.tokens_per_s:,.0f} tokens/s), final loss {summary.final_loss:.4f}"
    )
    out.print(f"model: {summary.model_dir}  (longreach eval --model {summary.model_dir} ...)")
    return 0


@app.command("generate")
def generate_command(
    model: str = MODEL,
    task: str = TASK,
    suite: str = SUITE,
    lengths: str = LENGTHS,
    out_file: Path = typer.Option(..., "--out", help="the JSONL file to write"),
    depths: str = DEPTHS,
    samples: int = SAMPLES,
    seed: int = SEED,
) -> int:
    """Write the instances an eval with the same flags would run (one JSON object a line)."""
    grid = Grid(_tasks(task, suite), parse_lengths(lengths), depths=parse_depths(depths), samples=samples)
    count = export_instances(RunConfig(grid, out_file.parent, model, seed=seed), out_file)
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


@app.command("compress-weights")
def compress_weights_command(
    model: str = typer.Argument(..., help="zoo name, HF model directory or .gguf file; cast to bfloat16"),
    out_dir: Path = typer.Argument(..., help="new folder: config, tokenizer and model.df11 (load it as --model)"),
    block_size: int = typer.Option(
        weight_codec.DEFAULT_BLOCK_SIZE, "--block-size", help="exponents per independently decodable block"
    ),
    max_code_length: int = typer.Option(
        weight_codec.DEFAULT_MAX_CODE_LENGTH, "--max-code-length", help="Huffman code length cap in bits (8-20)"
    ),
) -> int:
    """Compress a model's weights losslessly (DFloat11: Huffman-coded bfloat16 exponents, ~70% of the size)."""
    summary = compress_model(model, out_dir, block_size=block_size, max_code_length=max_code_length)
    out.print(
        f"{summary.tensors} tensors ({summary.coded_tensors} DFloat11-coded): "
        f"{summary.bf16_bytes / 2**20:.1f} MiB bfloat16 -> {summary.file_bytes / 2**20:.1f} MiB "
        f"({summary.ratio:.3f} of the size) in {summary.seconds:.1f} s"
    )
    out.print(f"load it with `--model {out_dir}` or load_model({str(out_dir)!r}); outputs are bit-identical")
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
    calibration: str = typer.Option(
        "niah_multivalue,bio_multi", "--calibration", help="task families of the calibration prompts, taken in turn"
    ),
    dtype: str = typer.Option("bf16", "--dtype", help="bf16 | fp32 | fp16"),
    seed: int = SEED,
) -> int:
    """Profile a model's attention heads (gradients) and search MoA per-head elastic windows for a cache budget."""
    from longreach.methods.attention.moa_profile import make_plan

    families = tuple(parse_task(spec).spec for spec in calibration.split(","))
    plan = make_plan(
        load_model(model, dtype),
        keep,
        parse_lengths(targets),
        parse_lengths(lengths),
        prompts,
        sink,
        seed,
        families=families,
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


def method_rows() -> list[list[str]]:
    """One row per registered method: name, kind, description [paper], parameters with defaults."""
    rows = []
    for name, cls in sorted(METHODS.items(), key=lambda item: KIND_ORDER.index(item[1].kind)):
        fields = ", ".join(f"{n}={d}" for n, d, _ in params.describe_fields(cls)) or "-"
        rows.append([name, cls.kind, cls.summary + (f" [{cls.paper}]" if cls.paper else ""), fields])
    return rows


@app.command("methods")
def methods_command(
    markdown: bool = typer.Option(False, "--markdown", help="print a markdown table (the README's)"),
) -> int:
    """List the registered methods and their parameters."""
    header = ["name", "kind", "description", "parameters (default)"]
    if markdown:
        print("| " + " | ".join(header) + " |\n|" + "---|" * len(header))
        for row in method_rows():
            print("| " + " | ".join(cell.replace("|", "\\|") for cell in row) + " |")
        return 0
    table = Table(*header)
    for row in method_rows():
        table.add_row(*row)
    out.print(table)
    return 0


@app.command("recipes")
def recipes_command(
    markdown: bool = typer.Option(False, "--markdown", help="print a markdown table (the README's)"),
) -> int:
    """List the registered training recipes and their knobs (``longreach train --recipe``)."""
    header = ["name", "description", "paper", "knobs (default)"]
    if markdown:
        print("| " + " | ".join(header) + " |\n|" + "---|" * len(header))
        for row in recipe_rows():
            print("| " + " | ".join(cell.replace("|", "\\|") for cell in row) + " |")
        return 0
    table = Table(*header)
    for row in recipe_rows():
        table.add_row(*row)
    out.print(table)
    return 0


@app.command("backends")
def backends_command() -> int:
    """List the registered backends and executors and their options (``--backend``, ``--executor``)."""
    table = Table("kind", "name", "description", "options (default)")
    for kind, registry in (("backend", BACKENDS), ("executor", EXECUTORS)):
        for name, cls in registry.items():
            options = ", ".join(f"{n}={d}" for n, d, _ in params.describe_fields(cls)) or "-"
            table.add_row(kind, name, cls.summary, options)
    out.print(table)
    return 0


@app.command("tasks")
def tasks_command() -> int:
    """List the registered tasks: family, place on the diffusion x scope grid (Goldman et al. 2024) and knobs."""
    table = Table("name", "family", "diffusion/ scope", "description")
    table.add_column("knobs (default)", overflow="fold")  # folded, never cut: every knob stays readable
    for name, entry in TASKS.items():
        knobs = ", ".join(f"{n}={entry.defaults.get(n, d)}" for n, d, _ in params.describe_fields(entry.family))
        family = entry.family
        grid = f"{family.diffusion}/ {family.scope}" if family.diffusion else "-"
        table.add_row(name, family.family, grid, entry.summary, knobs)
    out.print(table)
    suites = Table("suite", "description", "arguments", "tasks")
    for name, suite in SUITES.items():
        suites.add_row(name, suite.summary, ", ".join(f"{k}=..." for k in suite.knobs) or "-", ", ".join(suite.tasks))
    out.print(suites)
    return 0


def _tasks(task: str, suite: str) -> tuple[str, ...]:
    """The task specs of ``--task`` followed by those of ``--suite`` (at least one of them is needed)."""
    if not task.strip() and not suite.strip():
        raise LongreachError("give --task (e.g. passkey) or --suite (e.g. ruler-lite); see `longreach tasks`")
    specs = [s.strip() for s in task.split(",") if s.strip()]
    return tuple(dict.fromkeys(specs + (list(suite_tasks(suite)) if suite.strip() else [])))


def _one_length(text: str, option: str) -> int:
    """One token count (``4k``, ``4096``) for ``option``."""
    lengths = parse_lengths(text)
    if len(lengths) != 1:
        raise LongreachError(f"{option} takes one token count (e.g. 4k); got {text!r}")
    return lengths[0]


def _canonical(spec: str | None) -> str | None:
    """A method spec as results store it (``yarn:factor=4.0`` -> ``yarn:factor=4``)."""
    return None if spec is None else parse_stack(spec).repr


def _fail(message: str) -> None:
    print(f"longreach: error: {message}", file=sys.stderr)
    sys.exit(2)


_PYTHON_SHOWWARNING = warnings.showwarning
_WARNED: set[str] = set()  # the LongreachWarnings this process has printed (each is said once)


def _show_warning(message, category, filename, lineno, file=None, line=None) -> None:  # type: ignore[no-untyped-def]
    """``warnings.showwarning`` for the CLI: a ``LongreachWarning`` as one line on stderr, once a process; other
    warnings as Python shows them."""
    if issubclass(category, LongreachWarning):
        if str(message) not in _WARNED:
            _WARNED.add(str(message))
            print(f"longreach: warning: {message}", file=sys.stderr)
    else:
        _PYTHON_SHOWWARNING(message, category, filename, lineno, file, line)


def main(argv: list[str] | None = None) -> None:
    """Console entry point: run the command, turning every user error into one line and an exit status (and every
    ``LongreachWarning`` into one line, once)."""
    warnings.filterwarnings("always", category=LongreachWarning)  # _show_warning says each one once
    warnings.showwarning = _show_warning
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
