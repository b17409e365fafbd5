"""``longreach serve``: load the model once, build a stack per ``--method``, and run the API under uvicorn."""

from __future__ import annotations

import sys
from dataclasses import dataclass

import uvicorn

from longreach.engine import Engine
from longreach.errors import LongreachError
from longreach.methods import auto, parse_stack
from longreach.models import load_model
from longreach.prompts import PROMPT_CHOICES
from longreach.serve.app import Service, build_app
from longreach.serve.metrics import Metrics
from longreach.serve.scheduler import Limits, Scheduler
from longreach.serve.stacks import ServedStack, model_id, reach, serial_reason


@dataclass(frozen=True)
class ServeConfig:
    """The options of ``longreach serve``."""

    model: str
    methods: tuple[str, ...] = ("none",)
    host: str = "127.0.0.1"
    port: int = 8000
    max_concurrency: int = 8
    max_queue: int = 64
    kv_budget_mb: float = 2048.0
    api_key: str = ""
    prompt: str = "auto"
    dtype: str = "bf16"
    device: str = "cpu"
    timeout: float = 600.0
    max_body_mb: float = 16.0
    seed: int = 0

    def __post_init__(self) -> None:
        if self.prompt not in PROMPT_CHOICES:
            raise LongreachError(f"unknown prompt format {self.prompt!r}; valid: {', '.join(PROMPT_CHOICES)}")
        if not 0 <= self.port <= 65535:
            raise LongreachError(f"--port must be in [0, 65535]; got {self.port}")
        if self.max_concurrency < 1 or self.max_queue < 1:
            raise LongreachError(f"need --max-concurrency >= 1 and --max-queue >= 1; got {self.max_concurrency}, "
                                 f"{self.max_queue}")  # fmt: skip
        if self.kv_budget_mb <= 0 or self.timeout <= 0 or self.max_body_mb <= 0:
            raise LongreachError("--kv-budget-mb, --timeout and --max-body-mb must be > 0")


def load_service(config: ServeConfig) -> Service:
    """Load the model and resolve each ``--method`` into a served stack (``auto`` is calibrated once here)."""
    loaded = load_model(config.model, config.dtype, config.device)
    engine = Engine(loaded)
    stacks: dict[str, ServedStack] = {}
    for spec in config.methods:
        asked = parse_stack(spec)
        stack, _ = auto.resolve(asked, loaded, config.seed)
        name = model_id(config.model, asked)
        if name in stacks:
            raise LongreachError(f"--method {spec!r} is given twice")
        stacks[name] = ServedStack(name, stack, reach(loaded, stack), loaded.kv_bytes_per_token,
                                   serial_reason(engine, stack))  # fmt: skip
    has_template = bool(getattr(loaded.tokenizer, "chat_template", None))
    if config.prompt == "chat" and not has_template:
        raise LongreachError("--prompt chat: this model's tokenizer has no chat template; use --prompt raw or auto")
    metrics = Metrics()
    limits = Limits(config.max_concurrency, config.max_queue, int(config.kv_budget_mb * 2**20))
    return Service(
        engine=engine,
        model=model_id(config.model, parse_stack("none")),
        stacks=stacks,
        scheduler=Scheduler(engine, limits, metrics),
        metrics=metrics,
        chat="raw" if config.prompt == "raw" or not has_template else "template",
        api_key=config.api_key,
        timeout=config.timeout,
        max_body_bytes=int(config.max_body_mb * 2**20),
        seed=config.seed,
    )


def run_server(config: ServeConfig) -> None:
    """Serve until interrupted."""
    service = load_service(config)
    names = ", ".join(f"{name} ({'batched' if s.batched else 'one per step'})" for name, s in service.stacks.items())
    print(f"longreach serve: {names} on http://{config.host}:{config.port}/v1", file=sys.stderr, flush=True)
    uvicorn.run(build_app(service), host=config.host, port=config.port, log_level="warning")
