"""`python -m percontainer bench` (the side-by-side benchmark) and `... demo` (a tour)."""

from __future__ import annotations

import argparse
import asyncio
import os
import platform
import sys
import threading

from . import ENABLED, IMPLEMENTATION, Container, PerContainer, __version__, current, per_container

requests = PerContainer("percontainer.demo.requests", default=0)


@per_container
def seen_paths() -> list[str]:
    """Each tenant's own list, made on first use in that tenant."""
    return []


def handle(path: str) -> None:
    """A request handler: no tenant argument, yet it only touches its tenant's state."""
    requests.add(1)
    seen_paths.get().append(path)


async def serve(tenant: Container, paths: list[str]) -> None:
    with tenant:
        for path in paths:
            handle(path)
            await asyncio.sleep(0)  # other tenants' tasks run here


async def serve_all(tenants: list[Container]) -> None:
    await asyncio.gather(*(serve(t, [f"/{t.name}/{i}" for i in range(3)]) for t in tenants))


def demo() -> int:
    tenants = [Container(name) for name in ("acme", "globex", "initech")]
    asyncio.run(serve_all(tenants))
    workers = [threading.Thread(target=t.run, args=(handle, f"/{t.name}/thread")) for t in tenants]
    for worker in workers:
        worker.start()
    for worker in workers:
        worker.join()
    print(f"core: {IMPLEMENTATION}; virtualization {'on' if ENABLED else 'off (PERCONTAINER_DISABLE)'}")
    print(f"current container here: {current()!r}")
    for tenant in tenants:
        print(f"  {tenant.name:8s} requests={requests.of(tenant)}  paths={seen_paths.of(tenant)}")
    print(f"requests over all containers: {requests.sum()}")
    for tenant in tenants:
        tenant.close()
    return 0


def main(argv: list[str] | None = None, prog: str = "python -m percontainer") -> int:
    parser = argparse.ArgumentParser(prog=prog, description=__doc__)
    parser.add_argument("--version", action="version", version=_version_line())
    commands = parser.add_subparsers(dest="command")
    bench = commands.add_parser(
        "bench", help="percontainer against globals-in-structs and every peer, side by side")
    bench.add_argument("--full", action="store_true", help="the full sweeps (minutes)")
    bench.add_argument("--json", metavar="FILE", help="also write the results as JSON")
    bench.add_argument("--plot", metavar="FILE.png",
                       help="draw the scaling curves (matplotlib; the suffix names the format)")
    bench.add_argument("--disabled-worker", action="store_true", help=argparse.SUPPRESS)
    commands.add_parser("demo", help="three tenants served by asyncio tasks and threads")
    args, unknown = parser.parse_known_args(argv)
    if args.command is None:  # nothing asked: say what can be
        parser.print_help()
        return 0
    if unknown:  # the command's own usage, not the top level's
        commands.choices[args.command].error(f"unrecognized arguments: {' '.join(unknown)}")
    if args.command == "demo":
        return demo()
    from .benchmark.runner import Settings, check_outputs, disabled_worker, main_bench

    if args.disabled_worker:
        return disabled_worker(Settings(full=args.full))
    problem = check_outputs(args.json, args.plot)  # now, not after the run has measured
    if problem is not None:
        bench.error(problem)
    return main_bench(args.full, args.json, args.plot)


def _version_line() -> str:
    return (f"percontainer {__version__} (core: {IMPLEMENTATION}, "
            f"Python {platform.python_version()})")


def run_cli(argv: list[str] | None = None, prog: str = "percontainer") -> int:
    """`main`, quiet when a reader such as `head` or `grep -q` closes the pipe early."""
    try:
        status = main(argv, prog)
        sys.stdout.flush()
    except BrokenPipeError:
        # What the reader did not take is nobody's loss; the interpreter's own flush at exit must
        # not raise again, so stdout now goes nowhere.
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return 141  # what a shell reports for a writer killed by SIGPIPE
    return status


if __name__ == "__main__":
    raise SystemExit(run_cli(prog="python -m percontainer"))
