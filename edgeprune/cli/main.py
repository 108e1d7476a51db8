"""The ``edgeprune`` command line. Heavy imports (torch, onnx) happen inside each command, so
``edgeprune --help`` is instant and a command whose extra is missing says which one to install.

Every command turns an :class:`~edgeprune.errors.EdgepruneError` into one red line and exit code 2.
"""

import json
from collections.abc import Callable
from pathlib import Path
from typing import Annotated, Any

import typer
from rich.table import Table

from edgeprune.cli import analyze as analyze_cmd
from edgeprune.cli import package as package_cmd
from edgeprune.cli import prune as prune_cmd
from edgeprune.cli._common import console, fail, fmt, progress_steps, user_errors

app = typer.Typer(
    name="edgeprune",
    help="Prune neural networks for edge devices, and measure what the pruning really buys there.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)


def print_demo_table(record: dict[str, Any]) -> None:
    from edgeprune.demo import table_rows

    model = (record.get("demo") or {}).get("model", "digits-resnet")
    table = Table(title=f"edgeprune demo: {model} on ONNX Runtime (CPU)")
    for column in (
        "variant",
        "batch",
        "params (nz)",
        "MACs (eff.)",
        "accuracy",
        "p50 ms",
        "MAC ratio×",
        "kernel×",
        "roofline×",
        "measured×",
        "meas./MAC",
    ):
        if column == "variant":  # names are what people read first: never cut them
            table.add_column(column, no_wrap=True, min_width=max(len(r["variant"]) for r in table_rows(record)))
        else:
            table.add_column(column, justify="right")
    for row in table_rows(record):
        table.add_row(
            row["variant"],
            str(row["batch"]),
            f"{row['params']:,}",
            f"{row['macs'] / 1e6:.2f} M",
            fmt(row["accuracy"] and 100 * row["accuracy"], ".1f") + "%",
            f"{row['p50_ms']:.3f}",
            fmt(row["theoretical"], ".2f"),
            fmt(row["kernel_aware"], ".2f"),
            fmt(row["roofline"], ".2f"),
            fmt(row["measured"], ".2f"),
            fmt(row["ratio"], ".2f"),
        )
    console.print(table)
    console.print(
        "MAC ratio×, kernel× (kernel-aware: counts a pattern only where a kernel exploits it) and roofline× are "
        "theoretical estimates for this CPU; measured× is baseline p50 / variant p50, timed interleaved in the "
        "same run; meas./MAC = measured× / MAC ratio×. Per-layer explanation: report.html.",
        style="dim",
    )


@app.command()
def demo(
    out: Annotated[Path, typer.Option(help="Run folder for models, bundles and results.")] = Path("runs/demo"),
    threads: Annotated[int, typer.Option(help="torch threads for training (0: torch's default).")] = 0,
    task: Annotated[
        str,
        typer.Option(
            help="digits (digits-resnet, about a minute) or fashion-mnist (fashion-resnet on Debian's "
            "dataset-fashion-mnist files, several minutes)."
        ),
    ] = "digits",
) -> None:
    """Run the whole pipeline on a built-in task: train, prune three ways, fine-tune, package, bench, report.

    Example: edgeprune demo --out runs/demo

    More: edgeprune demo --task fashion-mnist --out runs/demo-fashion
    """
    with user_errors():
        from edgeprune.demo import TASKS, DemoConfig, run_demo

        if task not in TASKS:
            raise fail(f"--task {task!r} is not one of {', '.join(TASKS)}")
        with progress_steps() as step:
            record = run_demo(out, DemoConfig(task=task, threads=threads), step)
        print_demo_table(record)
        from edgeprune.report.load import SOURCE_KEY

        # The report names the file a record came from; the demo's is results.json beside it.
        _write_report([{**record, SOURCE_KEY: str(out / "results.json")}], out)
        console.print(f"results: {out / 'results.json'}  report: {out / 'report.html'}")


def _write_report(records: list[dict[str, Any]], out: Path) -> None:
    from edgeprune.report import write_report

    write_report(records, out)


@app.command()
def bench(
    bundles: Annotated[list[Path], typer.Argument(help="Bundle folders to measure.")],
    baseline: Annotated[Path | None, typer.Option(help="Dense bundle measured interleaved with each variant.")] = None,
    batch_sizes: Annotated[str, typer.Option(help="Comma-separated batch sizes.")] = "1,32",
    min_duration_s: Annotated[float, typer.Option(help="Timed seconds per runner and batch, at least.")] = 1.0,
    min_iterations: Annotated[int, typer.Option(help="Timed iterations per runner and batch, at least.")] = 50,
    agent: Annotated[str | None, typer.Option(help="URL of an edgeprune agent; measure there, not here.")] = None,
    token_file: Annotated[Path | None, typer.Option(help="File holding the agent's token.")] = None,
    threads: Annotated[int, typer.Option(help="ONNX Runtime intra-op threads (0: one per core).")] = 0,
    runner: Annotated[
        str,
        typer.Option(
            help="ort (ONNX Runtime, CPU), ort-cuda (ONNX Runtime's CUDA provider only) or trt (a TensorRT "
            "engine built from each bundle, cached; needs edgeprune[trt] and a GPU)."
        ),
    ] = "ort",
    power: Annotated[bool, typer.Option(help="Sample power where a sensor exists.")] = True,
    idle_s: Annotated[float, typer.Option(help="Idle seconds sampled for the power baseline.")] = 10.0,
    energy_s: Annotated[float, typer.Option(help="Seconds each bundle runs alone while power is sampled.")] = 5.0,
    json_out: Annotated[Path | None, typer.Option("--json", help="Write the result record here.")] = None,
) -> None:
    """Measure bundles (locally with ONNX Runtime, or on a device agent) against a baseline.

    Example: edgeprune bench runs/demo/bundles/channel-50mac --baseline runs/demo/bundles/dense --json r.json

    On a Jetson: edgeprune bench BUNDLE --baseline DENSE --runner trt (or from the host: --agent URL).
    """
    with user_errors():
        from edgeprune.device.measure.settings import BenchOptions, MeasureConfig
        from edgeprune.errors import UsageError

        try:
            sizes = tuple(int(b) for b in batch_sizes.split(",") if b.strip())
        except ValueError as err:
            raise UsageError(f"--batch-sizes must be comma-separated integers, got {batch_sizes!r}") from err
        if not sizes or min(sizes) < 1:
            raise UsageError("--batch-sizes needs positive integers")
        config = MeasureConfig(min_duration_s=min_duration_s, min_iterations=min_iterations)
        # Checked here, before any upload: the agent's API takes the same type and refuses the same values.
        options = BenchOptions(runner=runner, intra_op_threads=threads, power=power, idle_s=idle_s, energy_s=energy_s)
        with progress_steps() as step:
            if agent is not None:
                record = _bench_remote(agent, token_file, bundles, baseline, sizes, config, options, step)
            else:
                from edgeprune.device.measure.bench import BenchRequest, run_bench

                request = BenchRequest(bundles, baseline, sizes, config, options)
                record = run_bench(request, on_progress=lambda label, f: step(label, int(f * 100), 100)).to_dict()
        _print_bench(record)
        if record["power"].get("reason"):
            console.print(
                f"power: not measured ({record['power']['reason']})", style="dim", highlight=False, markup=False
            )
        if json_out is not None:
            json_out.write_text(json.dumps(record, indent=1) + "\n")


def _bench_remote(
    url: str,
    token_file: Path | None,
    bundles: list[Path],
    baseline: Path | None,
    sizes: tuple[int, ...],
    config: Any,
    options: Any,
    step: Callable[[str, int, int], None],
) -> dict[str, Any]:
    from edgeprune.device.agent.client import submit_and_wait
    from edgeprune.device.agent.config import load_token

    token = load_token(token_file)
    return submit_and_wait(
        url,
        token,
        bundles,
        baseline,
        sizes,
        config,
        options=options,
        on_progress=lambda state, f: step(f"agent: {state}", int(f * 100), 100),
    )


def _print_bench(record: dict[str, Any]) -> None:
    table = Table(title=f"{record['runner']['name']} on {record['provenance'].get('cpu_model') or 'this machine'}")
    for column in ("variant", "batch", "p50 ms", "p50 95% CI", "p99 ms", "CoV", "measured×", "theoretical×"):
        table.add_column(column, justify="left" if column == "variant" else "right")
    for variant in record["variants"]:
        per_batch = (variant.get("comparison") or {}).get("per_batch", {})
        for batch, stats in variant["latency"].items():
            comp = per_batch.get(batch, {})
            lo, hi = stats["p50_ci95_ms"]
            table.add_row(
                variant["name"],
                batch,
                f"{stats['p50_ms']:.3f}",
                f"{lo:.3f}–{hi:.3f}",
                f"{stats['p99_ms']:.3f}",
                f"{100 * stats['cov']:.1f}%" + (" !" if stats["unstable"] else ""),
                fmt(comp.get("measured_speedup"), ".2f"),
                fmt(comp.get("theoretical_speedup"), ".2f"),
            )
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


app.command(name="analyze")(analyze_cmd.analyze)
app.command(name="prune")(prune_cmd.prune)
app.command(name="package")(package_cmd.package)


def _mount_agent() -> None:
    try:
        from edgeprune.device.agent.cli import app as agent_app
    except ImportError:  # the device extra is missing: the rest of the CLI still works
        return
    app.add_typer(agent_app, name="agent", help="The on-device measurement service.")


_mount_agent()


def main() -> None:
    """Console-script entry point."""
    app(prog_name="edgeprune")


if __name__ == "__main__":
    main()
