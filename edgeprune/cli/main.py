"""The ``edgeprune`` command line. Heavy imports (torch, onnx) happen inside each command, so
``edgeprune --help`` is instant and a command whose extra is missing says which one to install.

Every command turns an :class:`~edgeprune.errors.EdgepruneError` into one red line and exit code 2.
"""

import json
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Annotated, Any

import typer
from rich.console import Console
from rich.progress import BarColumn, Progress, TaskID, TextColumn, TimeElapsedColumn
from rich.table import Table

from edgeprune.errors import EdgepruneError

app = typer.Typer(
    name="edgeprune",
    help="Prune neural networks for edge devices, and measure what the pruning really buys there.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)
console = Console()
err_console = Console(stderr=True)

MODEL_HELP = "digits-resnet, torchvision:NAME, package.module:factory, or a pruned-model folder."


def fail(message: str) -> typer.Exit:
    """Print one red line and return the exit to raise (code 2)."""
    err_console.print(f"[red]error:[/red] {message}", highlight=False, soft_wrap=True)
    return typer.Exit(code=2)


@contextmanager
def user_errors() -> Iterator[None]:
    """Turn library errors into one line and exit code 2, never a traceback."""
    try:
        yield
    except EdgepruneError as err:
        raise fail(str(err)) from err


@contextmanager
def progress_steps() -> Iterator[Callable[[str, int, int], None]]:
    """A rich progress display driven by ``step(label, done, total)`` calls."""
    with Progress(TextColumn("{task.description:<34}"), BarColumn(), TextColumn("{task.percentage:>3.0f}%"),
                  TimeElapsedColumn(), console=err_console, transient=False) as progress:
        tasks: dict[str, TaskID] = {}

        def step(label: str, done: int, total: int) -> None:
            if label not in tasks:
                tasks[label] = progress.add_task(label, total=max(total, 1))
            progress.update(tasks[label], completed=done, total=max(total, 1))

        yield step
        for task in tasks.values():
            progress.update(task, completed=progress.tasks[task].total)


def _fmt(value: float | None, spec: str) -> str:
    return "–" if value is None else format(value, spec)


def print_demo_table(record: dict[str, Any]) -> None:
    from edgeprune.demo import table_rows

    table = Table(title="edgeprune demo: digits-resnet on ONNX Runtime (CPU)")
    for column in ("variant", "batch", "params (nz)", "MACs (eff.)", "accuracy", "p50 ms",
                   "theoretical×", "measured×", "measured/theoretical"):
        table.add_column(column, justify="left" if column == "variant" else "right")
    for row in table_rows(record):
        table.add_row(row["variant"], str(row["batch"]), f"{row['params']:,}", f"{row['macs'] / 1e6:.2f} M",
                      _fmt(row["accuracy"] and 100 * row["accuracy"], ".1f") + "%", f"{row['p50_ms']:.3f}",
                      _fmt(row["theoretical"], ".2f"), _fmt(row["measured"], ".2f"), _fmt(row["ratio"], ".2f"))
    console.print(table)
    console.print("theoretical× is the MAC ratio (an estimate); measured× is baseline p50 / variant p50, "
                  "timed interleaved in the same run.", style="dim")


@app.command()
def demo(
    out: Annotated[Path, typer.Option(help="Run folder for models, bundles and results.")] = Path("runs/demo"),
    threads: Annotated[int, typer.Option(help="torch threads for training (0: torch's default).")] = 0,
) -> None:
    """Run the whole pipeline on the embedded digits model: train, prune three ways, package, bench, report.

    Example: edgeprune demo --out runs/demo
    """
    with user_errors():
        from edgeprune.demo import DemoConfig, run_demo

        with progress_steps() as step:
            record = run_demo(out, DemoConfig(threads=threads), step)
        print_demo_table(record)
        _write_report([record], out)
        console.print(f"results: {out / 'results.json'}  report: {out / 'report.html'}")


def _write_report(records: list[dict[str, Any]], out: Path) -> None:
    from edgeprune.report import write_report

    write_report(records, out)


@app.command()
def analyze(
    model: Annotated[str, typer.Argument(help=MODEL_HELP)],
    weights: Annotated[Path | None, typer.Option(help="A .safetensors or .pt state dict.")] = None,
    json_out: Annotated[Path | None, typer.Option("--json", help="Also write the analysis as JSON here.")] = None,
) -> None:
    """Per-layer cost table: MACs, parameters, bytes, density.

    Example: edgeprune analyze torchvision:resnet18 --json resnet18.json
    """
    with user_errors():
        from edgeprune.analysis.cost import model_cost
        from edgeprune.models.spec import load_model

        loaded = load_model(model, weights)
        cost = model_cost(loaded.model, loaded.input_shape)
        table = Table(title=f"{loaded.spec}: input {list(loaded.input_shape)}")
        for column in ("layer", "type", "in", "out", "MACs", "params", "density"):
            table.add_column(column, justify="left" if column in ("layer", "type") else "right")
        for layer in cost.layers:
            table.add_row(layer.name, layer.type, str(layer.in_channels), str(layer.out_channels),
                          f"{layer.macs:,}", f"{layer.params:,}", f"{layer.density:.2f}")
        table.add_row("total", "", "", "", f"{cost.macs:,}", f"{cost.params:,}", "", style="bold")
        console.print(table)
        if json_out is not None:
            json_out.write_text(json.dumps({"model": loaded.spec, "input_shape": list(loaded.input_shape),
                                            **cost.to_dict()}, indent=1) + "\n")


@app.command()
def prune(
    model: Annotated[str, typer.Argument(help=MODEL_HELP)],
    out: Annotated[Path, typer.Option(help="Folder for the pruned model (model.json, plan.json, weights).")],
    pattern: Annotated[str, typer.Option(help="channel, unstructured or nm.")] = "channel",
    sparsity: Annotated[float | None, typer.Option(help="Fraction removed, between 0 and 1.")] = None,
    target_macs: Annotated[float | None, typer.Option(help="channel only: fraction of MACs to keep.")] = None,
    criterion: Annotated[str, typer.Option(help="channel only: l1, l2, bn-scale, random.")] = "l1",
    round_to: Annotated[int, typer.Option(help="channel only: keep counts multiples of this.")] = 1,
    weights: Annotated[Path | None, typer.Option(help="A .safetensors or .pt state dict.")] = None,
    finetune_epochs: Annotated[int, typer.Option(help="digits-resnet only: fine-tune epochs after pruning.")] = 0,
) -> None:
    """Prune a model and write a pruned-model folder.

    Example: edgeprune prune digits-resnet --weights runs/demo/baseline/weights.safetensors
    --pattern channel --sparsity 0.3 --out runs/pruned
    """
    with user_errors():
        from edgeprune.prune.api import PruneRequest

        request = PruneRequest(pattern, sparsity=sparsity, target_macs=target_macs, criterion=criterion,
                               round_to=round_to)
        if out.exists() and any(out.iterdir()) and not (out / "model.json").is_file():
            raise fail(f"{out} exists and is not a pruned-model folder: choose another --out")
        from edgeprune.analysis.cost import model_cost
        from edgeprune.models.spec import load_model
        from edgeprune.prune.api import prune_model
        from edgeprune.prune.plan import save_pruned

        loaded = load_model(model, weights)
        pruned, plan, summary = prune_model(loaded.model, loaded.input_shape, request)
        accuracy = None
        if finetune_epochs > 0:
            accuracy = _finetune_digits(loaded.spec, pruned, plan.masks, finetune_epochs)
        before, after = model_cost(loaded.model, loaded.input_shape), model_cost(pruned, loaded.input_shape)
        meta = {"source": loaded.meta.get("source", loaded.spec), "input_shape": list(loaded.input_shape),
                "method": pattern, "accuracy": accuracy, "summary": summary}
        save_pruned(out, pruned, plan, meta)
        console.print(f"{pattern}: MACs {before.macs:,} → effective {after.effective_macs:,.0f} "
                      f"({before.macs / max(after.effective_macs, 1):.2f}× theoretical, MAC ratio); "
                      f"params {before.params:,} → {after.nonzero_params:,} non-zero; wrote {out}")


def _finetune_digits(spec: str, model: Any, masks: dict[str, Any], epochs: int) -> float:
    from edgeprune.models.digits import load_digits_data
    from edgeprune.models.train import TrainConfig, evaluate, train

    if spec != "digits-resnet":
        raise fail("--finetune-epochs needs a data set; only digits-resnet has one built in")
    data = load_digits_data()
    with progress_steps() as step:
        train(model, data.x_train, data.y_train, TrainConfig(epochs=epochs, lr=0.01, seed=1), masks=masks or None,
              on_step=lambda s, t: step("fine-tune", s, t))
    return evaluate(model, data.x_test, data.y_test)


@app.command()
def package(
    model: Annotated[str, typer.Argument(help="A pruned-model folder or any MODEL spec.")],
    out: Annotated[Path, typer.Option(help="Bundle folder to write.")],
    precision: Annotated[str, typer.Option(help="fp32 (fp16 and int8 come with calibration support).")] = "fp32",
    weights: Annotated[Path | None, typer.Option(help="A .safetensors or .pt state dict.")] = None,
    baseline: Annotated[str | None, typer.Option(help="MODEL spec of the dense baseline.")] = None,
    baseline_weights: Annotated[Path | None, typer.Option(help="Weights of the baseline.")] = None,
) -> None:
    """Export to ONNX, check parity with PyTorch under ONNX Runtime, and write a bundle.

    Example: edgeprune package runs/pruned --out runs/bundles/pruned
    """
    with user_errors():
        from edgeprune.analysis.cost import model_cost
        from edgeprune.export.package import package_model
        from edgeprune.models.spec import load_model

        loaded = load_model(model, weights)
        base_cost = None
        source = loaded.meta.get("source", loaded.spec)
        if baseline is not None:
            base = load_model(baseline, baseline_weights)
            base_cost = model_cost(base.model, base.input_shape)
        elif source != loaded.spec:
            src = load_model(source)
            base_cost = model_cost(src.model, src.input_shape)
        manifest = package_model(
            loaded.model, loaded.input_shape, out, name=Path(model).name if Path(model).is_dir() else model,
            spec=source, pattern=loaded.meta.get("method", "dense"), precision=precision,
            baseline_cost=base_cost, accuracy=loaded.meta.get("accuracy"), summary=loaded.meta.get("summary"),
        )
        console.print(f"bundle {out}: parity max |diff| {manifest['parity']['max_abs_diff']:.2e}, "
                      f"theoretical speedup {manifest['cost']['theoretical_speedup']:.2f}× (MAC ratio)")


@app.command()
def bench(
    bundles: Annotated[list[Path], typer.Argument(help="Bundle folders to measure.")],
    baseline: Annotated[Path | None, typer.Option(help="Dense bundle measured interleaved with each variant.")] = None,
    batch_sizes: Annotated[str, typer.Option(help="Comma-separated batch sizes.")] = "1,32",
    min_duration_s: Annotated[float, typer.Option(help="Timed seconds per runner and batch, at least.")] = 1.0,
    min_iterations: Annotated[int, typer.Option(help="Timed iterations per runner and batch, at least.")] = 50,
    agent: Annotated[str | None, typer.Option(help="URL of an edgeprune agent; measure there, not here.")] = None,
    token_file: Annotated[Path | None, typer.Option(help="File holding the agent's token.")] = None,
    json_out: Annotated[Path | None, typer.Option("--json", help="Write the result record here.")] = None,
) -> None:
    """Measure bundles (locally with ONNX Runtime, or on a device agent) against a baseline.

    Example: edgeprune bench runs/demo/bundles/channel-50mac --baseline runs/demo/bundles/dense --json r.json
    """
    with user_errors():
        from edgeprune.device.measure import MeasureConfig
        from edgeprune.errors import UsageError

        try:
            sizes = tuple(int(b) for b in batch_sizes.split(",") if b.strip())
        except ValueError as err:
            raise UsageError(f"--batch-sizes must be comma-separated integers, got {batch_sizes!r}") from err
        if not sizes or min(sizes) < 1:
            raise UsageError("--batch-sizes needs positive integers")
        config = MeasureConfig(min_duration_s=min_duration_s, min_iterations=min_iterations)
        with progress_steps() as step:
            if agent is not None:
                record = _bench_remote(agent, token_file, bundles, baseline, sizes, config, step)
            else:
                from edgeprune.device.bench import BenchRequest, run_bench

                record = run_bench(BenchRequest(bundles, baseline, sizes, config),
                                   on_progress=lambda label, f: step(label, int(f * 100), 100))
        _print_bench(record)
        if json_out is not None:
            json_out.write_text(json.dumps(record, indent=1) + "\n")


def _bench_remote(url: str, token_file: Path | None, bundles: list[Path], baseline: Path | None,
                  sizes: tuple[int, ...], config: Any, step: Callable[[str, int, int], None]) -> dict[str, Any]:
    from edgeprune.device.agent.config import load_token
    from edgeprune.device.client import submit_and_wait

    token = load_token(token_file)
    return submit_and_wait(url, token, bundles, baseline, sizes, config,
                           on_progress=lambda state, f: step(f"agent: {state}", int(f * 100), 100))


def _print_bench(record: dict[str, Any]) -> None:
    table = Table(title=f"{record['runner']['name']} on {record['provenance'].get('cpu_model') or 'this machine'}")
    for column in ("variant", "batch", "p50 ms", "p50 95% CI", "p99 ms", "CoV", "measured×", "theoretical×"):
        table.add_column(column, justify="left" if column == "variant" else "right")
    for variant in record["variants"]:
        per_batch = (variant.get("comparison") or {}).get("per_batch", {})
        for batch, stats in variant["latency"].items():
            comp = per_batch.get(batch, {})
            lo, hi = stats["p50_ci95_ms"]
            table.add_row(variant["name"], batch, f"{stats['p50_ms']:.3f}", f"{lo:.3f}–{hi:.3f}",
                          f"{stats['p99_ms']:.3f}", f"{100 * stats['cov']:.1f}%" + (" !" if stats["unstable"] else ""),
                          _fmt(comp.get("measured_speedup"), ".2f"), _fmt(comp.get("theoretical_speedup"), ".2f"))
    console.print(table)


@app.command()
def report(
    results: Annotated[list[Path] | None, typer.Argument(help="Result JSON files (from bench or demo).")] = None,
    out: Annotated[Path, typer.Option(help="Folder for report.html, table.json, table.csv, plots.")] = Path("report"),
    compare: Annotated[tuple[Path, Path] | None, typer.Option(help="OLD NEW: flag regressions, exit 1 if any.")] = None,
    threshold: Annotated[float, typer.Option(help="With --compare: % slower that counts as a regression.")] = 5.0,
    json_out: Annotated[bool, typer.Option("--json", help="Print the table as JSON instead.")] = False,
) -> None:
    """Tables, plots and a self-contained HTML report from result records.

    Example: edgeprune report runs/demo/results.json --out runs/report
    """
    with user_errors():
        from edgeprune.cli.report import report_command

        code = report_command(results or [], out, compare, threshold, json_out)
        if code:
            raise typer.Exit(code=code)


def _mount_agent() -> None:
    try:
        from edgeprune.cli.agent import app as agent_app
    except ImportError:  # the device extra is missing: the rest of the CLI still works
        return
    app.add_typer(agent_app, name="agent", help="The on-device measurement service.")


_mount_agent()


def main() -> None:
    """Console-script entry point."""
    app(prog_name="edgeprune")


if __name__ == "__main__":
    main()
