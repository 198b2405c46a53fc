"""``deeptrust-dev``: the developer's commands, kept out of the runtime CLI.

A local Kafka broker or cluster, the local language-model and MLflow servers, WordNet's
build-time layout, and the demo. The ``deeptrust`` script that images and pods run never
imports this package (``make lint`` checks it with import-linter).
"""

from __future__ import annotations

import logging
import sys
from pathlib import Path

import click
from confluent_kafka import KafkaException
from rich.console import Console

from deeptrust.devtools.local_broker import LocalBroker
from deeptrust.devtools.local_cluster import LocalCluster

DEFAULT_HOME = Path(".deeptrust")


@click.group()
@click.option("-v", "--verbose", is_flag=True, help="Log at debug level.")
def dev(verbose: bool) -> None:
    """DeepTrust's developer tools: local servers, build-time data and the demo."""
    logging.basicConfig(
        level=logging.DEBUG if verbose else logging.INFO,
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
    )


@dev.group()
def kafka() -> None:
    """Run a local Kafka broker, or a cluster of N (KRaft; jars from Maven Central)."""


_home_option = click.option(
    "--home", type=click.Path(path_type=Path), default=DEFAULT_HOME / "kafka", show_default=True
)
_port_option = click.option(
    "--port",
    type=int,
    default=9092,
    show_default=True,
    help="Client port; the controller uses the next one (node i of a cluster: 2(i-1) higher).",
)


def _local_broker(home: Path, port: int) -> LocalBroker:
    return LocalBroker(home, port=port, controller_port=port + 1)


def _local_cluster(home: Path, port: int, brokers: int | None) -> LocalCluster | None:
    """The cluster ``home`` holds, or a new one of ``brokers`` > 1; None for a single broker."""
    recorded = LocalCluster.load(home)
    if recorded is not None:
        if brokers is not None and brokers != len(recorded.nodes):
            raise click.ClickException(
                f"{home} holds a cluster of {len(recorded.nodes)}; use another --home"
            )
        return recorded
    if brokers is None or brokers == 1:
        return None
    if (home / "data").exists():
        raise click.ClickException(f"{home} holds a single broker; use another --home")
    return LocalCluster.on_ports(home, port, brokers)


def _echo_nodes(cluster: LocalCluster) -> bool:
    """Print each node's state; return whether all run."""
    running = True
    for node_id in cluster.node_ids:
        node = cluster.node(node_id)
        pid = node.pid()
        running = running and pid is not None
        state = "not running" if pid is None else f"running (pid {pid})"
        click.echo(f"node {node_id} at {node.bootstrap_servers}: {state}")
    return running


@kafka.command("up")
@_home_option
@_port_option
@click.option(
    "--brokers",
    type=click.IntRange(min=1),
    default=None,
    help="Nodes, each broker and controller [default: what --home holds, else 1]; "
    "3 or more keep 3 copies with 2 in sync.",
)
def kafka_up(home: Path, port: int, brokers: int | None) -> None:
    """Fetch Kafka if needed, start the broker (or every node) and wait until it answers."""
    cluster = _local_cluster(home, port, brokers)
    if cluster is None:
        broker = _local_broker(home, port)
        broker.start()
        click.echo(f"kafka running at {broker.bootstrap_servers} (pid {broker.pid()})")
        return
    cluster.start()
    _echo_nodes(cluster)
    click.echo(f"kafka cluster running at {cluster.bootstrap_servers}")


@kafka.command("down")
@_home_option
@_port_option
def kafka_down(home: Path, port: int) -> None:
    """Stop the broker (or every node)."""
    cluster = LocalCluster.load(home)
    if cluster is None:
        _local_broker(home, port).stop()
    else:
        cluster.stop()
    click.echo("kafka stopped")


@kafka.command("status")
@_home_option
@_port_option
def kafka_status(home: Path, port: int) -> None:
    """Say whether the broker (each node) runs; exit 1 if it (any) does not."""
    cluster = LocalCluster.load(home)
    if cluster is not None:
        if not _echo_nodes(cluster):
            sys.exit(1)
        try:
            health = cluster.health()
        except KafkaException as error:
            click.echo(f"the cluster does not answer: {error}")
            sys.exit(1)
        click.echo(
            f"registered brokers: {', '.join(map(str, sorted(health.brokers)))}; "
            f"under-replicated partitions: {len(health.under_replicated)}"
        )
        return
    broker = _local_broker(home, port)
    pid = broker.pid()
    if pid is None:
        click.echo("kafka not running")
        sys.exit(1)
    click.echo(f"kafka running at {broker.bootstrap_servers} (pid {pid})")


@kafka.command("restart")
@_home_option
@_port_option
@click.option(
    "--rolling",
    is_flag=True,
    help="One node at a time, waiting until every partition is back in sync before the next.",
)
def kafka_restart(home: Path, port: int, rolling: bool) -> None:
    """Restart the broker (or every node): all at once, or rolling through a cluster."""
    cluster = LocalCluster.load(home)
    if cluster is None:
        if rolling:
            raise click.ClickException("a rolling restart needs a cluster: kafka up --brokers 3")
        broker = _local_broker(home, port)
        broker.stop()
        broker.start()
        click.echo(f"kafka running at {broker.bootstrap_servers} (pid {broker.pid()})")
        return
    if rolling:
        cluster.restart_rolling(while_down=lambda node_id: click.echo(f"node {node_id} stopped"))
    else:
        cluster.stop()
        cluster.start()
    _echo_nodes(cluster)
    click.echo("every partition in sync")


@dev.group()
def llm() -> None:
    """Run the local language-model server (llama.cpp, Gemma 3 270M from PyPI)."""


_llm_home_option = click.option(
    "--home", type=click.Path(path_type=Path), default=DEFAULT_HOME / "llm", show_default=True
)
_llm_port_option = click.option("--port", type=int, default=8081, show_default=True)


@llm.command("up")
@_llm_home_option
@_llm_port_option
def llm_up(home: Path, port: int) -> None:
    """Start the server and wait until it serves the model."""
    from deeptrust.devtools.llm_server import MODEL_ALIAS, LocalLLMServer

    server = LocalLLMServer(home, port=port)
    server.start()
    click.echo(f"{MODEL_ALIAS} served at {server.base_url} (pid {server.pid()})")


@llm.command("down")
@_llm_home_option
@_llm_port_option
def llm_down(home: Path, port: int) -> None:
    """Stop the server."""
    from deeptrust.devtools.llm_server import LocalLLMServer

    LocalLLMServer(home, port=port).stop()
    click.echo("language-model server stopped")


@dev.command("demo")
@click.option(
    "--images",
    type=click.Path(exists=True, path_type=Path),
    default=Path("samples/images"),
    show_default=True,
)
@click.option("--query", default="cat", show_default=True)
@click.option("--home", type=click.Path(path_type=Path), default=DEFAULT_HOME, show_default=True)
@click.option(
    "--s3", is_flag=True, help="Keep the images in a bucket on a local S3 API server (moto)."
)
@click.option(
    "--serve",
    is_flag=True,
    help="Then keep the moderation console and the search page up until Ctrl-C.",
)
@click.option("--host", default="127.0.0.1", show_default=True, help="Where --serve listens.")
@click.option("--port", type=int, default=8090, show_default=True, help="The console's port.")
def demo(images: Path, query: str, home: Path, s3: bool, serve: bool, host: str, port: int) -> None:
    """Start a broker and every stage, push the sample images through, show the results."""
    from deeptrust.devtools.demo import run_demo

    out = Console(width=None if sys.stdout.isatty() else 160)
    run_demo(out, images, query, home, s3, (host, port) if serve else None)


@click.group("mlflow")
def mlflow_group() -> None:
    """Run a local MLflow tracking server (SQLite store, local artefacts)."""


_mlflow_home_option = click.option(
    "--home", type=click.Path(path_type=Path), default=DEFAULT_HOME / "mlflow", show_default=True
)
_mlflow_port_option = click.option("--port", type=int, default=5000, show_default=True)


@mlflow_group.command("up")
@_mlflow_home_option
@_mlflow_port_option
def mlflow_up(home: Path, port: int) -> None:
    """Start the server unless it runs; print its tracking URI."""
    from deeptrust.devtools.mlflow_server import LocalTrackingServer, TrackingServerError

    server = LocalTrackingServer(home, port)
    try:
        server.start()
    except TrackingServerError as error:
        raise click.ClickException(str(error)) from error
    click.echo(f"mlflow tracking at {server.tracking_uri} (pid {server.pid()})")


@mlflow_group.command("down")
@_mlflow_home_option
@_mlflow_port_option
def mlflow_down(home: Path, port: int) -> None:
    """Stop the server; runs and models stay in its store."""
    from deeptrust.devtools.mlflow_server import LocalTrackingServer

    LocalTrackingServer(home, port).stop()
    click.echo("mlflow stopped")


dev.add_command(mlflow_group)


@click.group("ray")
def ray_group() -> None:
    """Run a local Ray head for the retrain service's Ray Train and Tune jobs."""


_ray_home_option = click.option(
    "--home", type=click.Path(path_type=Path), default=DEFAULT_HOME / "ray", show_default=True
)
_ray_port_option = click.option("--port", type=int, default=6380, show_default=True)


@ray_group.command("up")
@_ray_home_option
@_ray_port_option
@click.option("--cpus", type=int, default=6, show_default=True, help="CPUs the head declares.")
def ray_up(home: Path, port: int, cpus: int) -> None:
    """Start the head unless it runs; print the address jobs use."""
    from deeptrust.devtools.ray_cluster import LocalRayCluster, RayClusterError

    cluster = LocalRayCluster(home, port, cpus)
    try:
        cluster.start()
    except RayClusterError as error:
        raise click.ClickException(str(error)) from error
    click.echo(f"ray head at {cluster.address} (pid {cluster.pid()}):")
    click.echo(f"  export DEEPTRUST_TRAINING_RAY_ADDRESS={cluster.address}")


@ray_group.command("down")
@_ray_home_option
@_ray_port_option
def ray_down(home: Path, port: int) -> None:
    """Stop the head and its workers."""
    from deeptrust.devtools.ray_cluster import LocalRayCluster

    LocalRayCluster(home, port).stop()
    click.echo("ray stopped")


dev.add_command(ray_group)


@dev.command("wordnet")
def wordnet() -> None:
    """Lay WordNet 3.0 out where the tag stage reads it (a build step; fetched once, via apt)."""
    from deeptrust.devtools.wordnet import lay_out_wordnet

    click.echo(str(lay_out_wordnet()))


@dev.command("debian")
@click.argument("package")
def debian(package: str) -> None:
    """Fetch and unpack a Debian package into the cache (nothing installed); print its root."""
    from deeptrust.devtools.debian import DebianPackageError, debian_package

    try:
        click.echo(str(debian_package(package)))
    except DebianPackageError as error:
        raise click.ClickException(str(error)) from error


def main() -> None:
    """Entry point of the ``deeptrust-dev`` script."""
    dev()


if __name__ == "__main__":
    main()
