"""``python -m bench plot``: PostgreSQL throughput against chunk size, ours and direct COPY.

For chunk sizes of 10, 100, 1,000 and 5,000 rows, the ``postgres`` case's two
variants (``dl.log()`` + flush, and the direct psycopg COPY loop) run in
alternation on one node; the medians are drawn on log-log axes to
docs/img/throughput_vs_chunk.png and written as JSON like every case. The
ceilings, which do not depend on the chunk size, are drawn across: one bulk
COPY of 200,000 rows and the destination's ``send_data`` called in-process on
10,000-row groups (issue 19). Needs matplotlib (the ``bench`` extra).
"""

from __future__ import annotations

from pathlib import Path

from ._common import (
    Metrics,
    Mode,
    Result,
    RssSampler,
    alternate,
    check_count,
    medians_of,
    ratio,
    report,
    write_result,
)
from ._node import (
    Chunk,
    chunked,
    node,
    pg_connect,
    pg_count,
    pg_destination,
    pg_drop,
    pg_rows,
    send_data_direct,
    unique,
)
from .postgres import bulk_copy, copy_chunks, log_chunks

IMAGE = Path(__file__).resolve().parent.parent / "docs" / "img" / "throughput_vs_chunk.png"
SIZES = (10, 100, 1000, 5000)


def sweep(mode: Mode) -> Result:
    """Measure both variants at every chunk size."""
    totals = mode.pick({10: 20_000, 100: 100_000, 1000: 200_000, 5000: 200_000},
                       {10: 4_000, 100: 20_000, 1000: 50_000, 5000: 50_000},
                       {10: 100, 100: 200, 1000: 1000, 5000: 5000})
    rounds = mode.rounds_or(3, 1, 1)
    result = Result("throughput_vs_chunk", mode.name, {"totals": totals, "rounds": rounds})
    tables: list[str] = []
    try:
        with RssSampler() as sampler, pg_connect() as conn, node(
            {"pg": pg_destination()}, sampler=sampler
        ) as dl:
            dl.log(unique("bench_pg_warm"), pg_rows(10))
            dl.flush(60.0)
            for size in SIZES:
                total = totals[size]
                chunks = chunked(pg_rows(total), size)

                def ours(r: int, size: int = size, total: int = total,
                         chunks: list[Chunk] = chunks) -> Metrics:
                    topic = unique(f"bench_pg_c{size}")
                    tables.append(topic)
                    seconds = log_chunks(dl, topic, chunks)
                    check_count(topic, total, pg_count(topic))
                    return {"rows_per_s": total / seconds}

                def copy(r: int, size: int = size, total: int = total,
                         chunks: list[Chunk] = chunks) -> Metrics:
                    table = unique(f"bench_copy_c{size}")
                    tables.append(table)
                    seconds = copy_chunks(conn, table, chunks)
                    check_count(table, total, pg_count(table))
                    return {"rows_per_s": total / seconds}

                per_round = alternate(rounds, {f"ours_{size}": ours, f"copy_{size}": copy},
                                      sampler)
                result.per_round.update(per_round)
                med = medians_of(per_round)
                result.medians.update(med)
                result.ratios[f"ours/copy at {size}"] = ratio(
                    med[f"ours_{size}"]["rows_per_s"], med[f"copy_{size}"]["rows_per_s"]
                )
            rows = pg_rows(totals[5000])

            def bulk(r: int) -> Metrics:
                table = unique("bench_bulk")
                tables.append(table)
                seconds = bulk_copy(conn, table, rows)
                check_count(table, len(rows), pg_count(table))
                return {"rows_per_s": len(rows) / seconds}

            def direct(r: int) -> Metrics:
                table = unique("bench_direct")
                tables.append(table)
                seconds = send_data_direct(pg_destination(), table, rows)
                check_count(table, len(rows), pg_count(table))
                return {"rows_per_s": len(rows) / seconds}

            ceilings = alternate(rounds, {"bulk_copy": bulk, "send_data": direct}, sampler)
            result.per_round.update(ceilings)
            result.medians.update(medians_of(ceilings))
        result.memory = sampler.peaks()
    finally:
        pg_drop(tables)
    result.verified["tables counted"] = len(tables)
    return result


def draw(result: Result, path: Path = IMAGE) -> Path:
    """Draw rows/s against chunk size for both variants to ``path``."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(7, 4.5), dpi=110)
    for variant, label in (("ours", "datalogger.log() -> PostgreSQL (multiprocTCPBase)"),
                           ("copy", "direct psycopg COPY loop")):
        ys = [result.medians[f"{variant}_{s}"]["rows_per_s"] for s in SIZES]
        ax.plot(SIZES, ys, marker="o", label=label)
        for x, y in zip(SIZES, ys, strict=True):
            ax.annotate(f"{y:,.0f}", (x, y), textcoords="offset points", xytext=(4, 6),
                        fontsize=7)
    for variant, label, style in (
        ("bulk_copy", "one bulk COPY of all rows (psycopg write_row)", "--"),
        ("send_data", "send_data in-process, 10,000-row groups (no node)", ":"),
    ):
        if variant in result.medians:
            y = result.medians[variant]["rows_per_s"]
            ax.axhline(y, linestyle=style, color="grey", label=f"{label}: {y:,.0f}")
    ax.set_xscale("log")
    ax.set_yscale("log")
    ax.set_xlabel("rows per chunk")
    ax.set_ylabel("rows/s (to stored, median)")
    ax.set_title(f"PostgreSQL throughput vs chunk size ({result.mode} run)")
    ax.grid(True, which="both", alpha=0.3)
    ax.legend(fontsize=8)
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path)
    plt.close(fig)
    return path


def main(mode: Mode, json_path: str | None = None) -> int:
    """Run the sweep, print and write the result, draw the PNG; return 0."""
    result = sweep(mode)
    print(report(result))
    print(f"  written {write_result(result, json_path)}")
    print(f"  drawn {draw(result)}")
    return 0
