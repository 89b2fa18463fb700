"""What the documentation shows a program print is what it prints.

Every fenced ```console block and every ```text block in the docs and the README is
checked, unless it is a command's usage line (checked against ``--help``) or says
(an HTML comment on the line before it) why it is not:

- ``<!-- output -->`` before a ```text block: what the closest ```python or ```sh block
  before it prints;
- ```console blocks: each ``$ command`` is run and what it prints (stderr, then stdout)
  is compared with the lines under it; ``$ echo $?`` checks the exit status;
- ``<!-- scene: NAME -->`` before a block: it runs with the processes of that scene
  (below) started first, documented addresses mapped to the real ones;
- ``<!-- log: SCENE NODE -->`` before a ```text block: its lines appear, in order, in
  that node's log when the scene plays;
- ``<!-- not run: REASON -->``: shown for illustration (measured figures, a session).

Outputs are compared after normalising what changes from run to run: ports, the random
suffix of short-lived node ids, incarnations, digests and times.
"""

from __future__ import annotations

import contextlib
import os
import re
import shlex
import signal
import subprocess
import sys
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path

import pytest

from tests.helpers import wait_until
from zcluster.testing.processes import free_port_pair

ROOT = Path(__file__).resolve().parent.parent
PAGES = [*sorted((ROOT / "docs").glob("*.md")), ROOT / "README.md"]
RUN_TIMEOUT_S = 60
NODE_READY_S = 15

_FENCE = re.compile(r"^```([\w-]*)[ \t]*\n(.*?)^```[ \t]*$", re.MULTILINE | re.DOTALL)
_MARK = re.compile(r"<!--\s*(output|scene|log|not run)\s*:?\s*(.*?)\s*-->\s*\n*\Z", re.DOTALL)
_USAGE = re.compile(r"^zcluster( [a-z][a-z0-9-]*)? \[OPTIONS\]")

#: what changes from one run to the next, and what stands for it
_VARYING = [
    (re.compile(r"\d{4}-\d\d-\d\d \d\d:\d\d:\d\d,\d{3}"), "<time>"),
    (re.compile(r"\b(127\.0\.0\.1|localhost):\d+"), r"\1:<port>"),
    (re.compile(r"\b(pub|sub|members)-[0-9a-f]{8}\b"), r"\1-<id>"),
    (re.compile(r"\b[0-9a-f]{16}\b"), "<digest>"),
    (re.compile(r"\b\d{16,}\b"), "<incarnation>"),
    (re.compile(r"\b\d+\.\d+s\b"), "<seconds>"),
    (re.compile(r"\brequest \d+"), "request <id>"),
    (re.compile(r" {2,}"), " "),  # table columns and indents, which follow the widths above
]


def normalised(text: str) -> list[str]:
    lines = []
    for line in text.splitlines():
        for pattern, stand_in in _VARYING:
            line = pattern.sub(stand_in, line)
        if line.strip():
            lines.append(line.rstrip())
    return lines


@dataclass
class Block:
    page: str
    index: int
    lang: str
    body: str
    mark: str  # "", "output", "scene", "log", "not run"
    argument: str

    @property
    def id(self) -> str:
        return f"{self.page}#{self.index}"


def blocks_of(path: Path) -> list[Block]:
    text = path.read_text()
    found: list[Block] = []
    previous_end = 0
    for index, match in enumerate(_FENCE.finditer(text)):
        before = text[previous_end : match.start()]
        mark = _MARK.search(before)
        kind, argument = (mark.group(1), mark.group(2)) if mark else ("", "")
        found.append(Block(path.name, index, match.group(1), match.group(2), kind, argument))
        previous_end = match.end()
    return found


BLOCKS = [block for page in PAGES for block in blocks_of(page)]


def shown(block: Block) -> bool:
    """Whether the block shows what a program prints (and so must be checked)."""
    return block.lang == "console" or (block.lang == "text" and not _USAGE.match(block.body))


def test_every_shown_output_is_checked_or_says_why_not() -> None:
    unmarked = [b.id for b in BLOCKS if shown(b) and b.lang == "text" and not b.mark]
    assert not unmarked, (
        "text blocks that show output need <!-- output -->, <!-- log: SCENE NODE --> or "
        f"<!-- not run: REASON --> on the line before them: {unmarked}"
    )


# ---------------------------------------------------------------- processes


def clean_env() -> dict[str, str]:
    return {k: v for k, v in os.environ.items() if not k.startswith("ZCLUSTER_")}


def zcluster_argv(command: str) -> list[str]:
    words = shlex.split(command)
    assert words[0] == "zcluster", command
    return [sys.executable, "-m", "zcluster", *words[1:]]


@dataclass
class Scene:
    """Processes a block runs with, and the documented addresses mapped to real ones."""

    cwd: Path
    addresses: dict[str, str] = field(default_factory=dict)
    logs: dict[str, Path] = field(default_factory=dict)
    processes: dict[str, subprocess.Popen[bytes]] = field(default_factory=dict)

    def real(self, text: str) -> str:
        for documented, actual in self.addresses.items():
            text = text.replace(documented, actual)
        return text

    def address(self, documented_port: int) -> str:
        """The real ROUTER address for a documented one (its PUB is the next port)."""
        key = f"127.0.0.1:{documented_port}"
        if key not in self.addresses:
            port = free_port_pair()
            self.addresses[key] = f"127.0.0.1:{port}"
            self.addresses[f"127.0.0.1:{documented_port + 1}"] = f"127.0.0.1:{port + 1}"
        return self.addresses[key]

    def start(self, name: str, command: str, ready: str | None = None) -> None:
        """Start a zcluster command, its output (stdout and stderr) to its log."""
        self.spawn(name, zcluster_argv(self.real(command)), ready)

    def spawn(self, name: str, argv: list[str], ready: str | None = None) -> None:
        log = self.cwd / f"{name}.log"
        with log.open("wb") as out:
            self.processes[name] = subprocess.Popen(
                argv, stdout=out, stderr=subprocess.STDOUT, cwd=self.cwd, env=clean_env()
            )
        self.logs[name] = log
        if ready is not None:
            assert wait_until(lambda: ready in log.read_text(errors="replace"), NODE_READY_S), (
                log.read_text(errors="replace")
            )

    def log(self, name: str) -> str:
        return self.logs[name].read_text(errors="replace")

    def stop(self, name: str, how: int = signal.SIGTERM) -> None:
        proc = self.processes[name]
        if proc.poll() is None:
            proc.send_signal(how)
        proc.wait(RUN_TIMEOUT_S)

    def close(self) -> None:
        for proc in self.processes.values():
            if proc.poll() is None:
                proc.kill()
            proc.wait(RUN_TIMEOUT_S)


def one_node(scene: Scene) -> None:
    scene.start("n1", f"zcluster node --id n1 --bind {scene.address(7000)}", "listening on")


def one_subscriber(scene: Scene) -> None:
    one_node(scene)
    scene.start("sub", "zcluster sub orders --seed 127.0.0.1:7000", "subscribed to 'orders'")


def three_nodes(scene: Scene) -> None:
    """getting-started.md's cluster by hand: n1, then n2 and n3 through it."""
    one_node(scene)
    for node, port in (("n2", 7002), ("n3", 7004)):
        scene.start(
            node,
            f"zcluster node --id {node} --bind {scene.address(port)} --seed 127.0.0.1:7000",
            "listening on",
        )
        assert wait_until(lambda node=node: f"{node}=up" in scene.log("n1"), NODE_READY_S)


def three_tagged_nodes(scene: Scene) -> None:
    scene.start(
        "n1", f"zcluster node --id n1 --bind {scene.address(7000)} --tag role=seed", "listening"
    )
    for node, port, zone in (("n2", 7002, "a"), ("n3", 7004, "b")):
        scene.start(
            node,
            f"zcluster node --id {node} --bind {scene.address(port)} --seed 127.0.0.1:7000 "
            f"--tag role=worker --tag zone={zone}",
            "listening on",
        )
        assert wait_until(lambda node=node: f"{node}=up" in scene.log("n1"), NODE_READY_S)


def three_nodes_story(scene: Scene) -> None:
    """getting-started.md's story: the cluster forms, n3 is killed, restarted, n2 leaves."""
    three_nodes(scene)
    assert wait_until(lambda: "view: 3 up of 3" in scene.log("n1"), NODE_READY_S)
    scene.stop("n3", signal.SIGKILL)
    assert wait_until(lambda: "member n3 suspect -> down" in scene.log("n1"), NODE_READY_S)
    scene.start("n3", f"zcluster node --id n3 --bind {scene.address(7004)} --seed 127.0.0.1:7000")
    assert wait_until(lambda: scene.log("n1").count("member n3 joining -> up") == 2, NODE_READY_S)
    scene.stop("n2", signal.SIGINT)
    assert wait_until(lambda: "member n2 leaving -> left" in scene.log("n1"), NODE_READY_S)


def nothing_at_7999(scene: Scene) -> None:
    scene.address(7999)  # a free port: nothing listens there


def wrong_seed(scene: Scene) -> None:
    """A node given n1's PUB port as its seed: it says so after join_warning_interval_s."""
    one_node(scene)
    scene.start("n2", "zcluster node --id n2 --seed 127.0.0.1:7001", "not admitted")


def orders_subscribed(scene: Scene) -> None:
    """n1 and n2, and a subscriber of 'orders' (getting-started.md)."""
    one_node(scene)
    scene.start(
        "n2",
        f"zcluster node --id n2 --bind {scene.address(7002)} --seed 127.0.0.1:7000",
        "listening on",
    )
    assert wait_until(lambda: "n2=up" in scene.log("n1"), NODE_READY_S)
    scene.start("sub", "zcluster sub orders --seed 127.0.0.1:7000", "subscribed to 'orders'")


def orders_story(scene: Scene) -> None:
    """getting-started.md: subscribe in one terminal, publish three from another."""
    orders_subscribed(scene)
    code, printed = run_command(scene, "zcluster pub orders hello --seed 127.0.0.1:7002 --count 3")
    assert code == 0, printed
    assert wait_until(lambda: scene.log("sub").count("] hello") == 3, NODE_READY_S)


#: a publisher that says hello on 'orders' every tenth of a second, until stopped
HELLO_EVERY_SO_OFTEN = """
import sys, time
from zcluster import Node

with Node("pub-c6c40f02", seeds=[sys.argv[1]]) as node:
    while True:
        node.publish("orders", "hello")
        time.sleep(0.1)
"""


def hello_every_so_often(scene: Scene) -> None:
    one_node(scene)
    argv = [sys.executable, "-c", HELLO_EVERY_SO_OFTEN, scene.address(7000)]
    scene.spawn("hello", argv)
    assert wait_until(lambda: "pub-c6c40f02=up" in scene.log("n1"), NODE_READY_S)


#: a node with a handler, as an application would run one
GREETER = """
import sys, threading
from zcluster import Node

with Node("n1", bind=sys.argv[1]) as node:
    node.register("greet", lambda name, sender: f"hello, {name}")
    print("greeter ready", flush=True)
    threading.Event().wait()
"""


def greeter(scene: Scene) -> None:
    scene.spawn("n1", [sys.executable, "-c", GREETER, scene.address(7000)], "greeter ready")


def bad_config_file(scene: Scene) -> None:
    (scene.cwd / "node.toml").write_text('id = "n1"\nport = 7000\n')


SCENES: dict[str, Callable[[Scene], None]] = {
    "one-node": one_node,
    "one-subscriber": one_subscriber,
    "three-nodes": three_nodes,
    "three-tagged-nodes": three_tagged_nodes,
    "three-nodes-story": three_nodes_story,
    "bad-config-file": bad_config_file,
    "nothing-at-7999": nothing_at_7999,
    "wrong-seed": wrong_seed,
    "orders-subscribed": orders_subscribed,
    "orders-story": orders_story,
    "hello-every-so-often": hello_every_so_often,
    "greeter": greeter,
}


@contextlib.contextmanager
def scene_for(name: str, cwd: Path) -> Iterator[Scene]:
    scene = Scene(cwd)
    try:
        if name:
            assert name in SCENES, f"no scene named {name!r} (tests/test_docs_output.py)"
            SCENES[name](scene)
        yield scene
    finally:
        scene.close()


# ---------------------------------------------------------------- console blocks


def steps(body: str) -> list[tuple[str, list[str]]]:
    """``(command, lines it prints)`` for each ``$ command`` of a console block."""
    out: list[tuple[str, list[str]]] = []
    for line in body.splitlines():
        if line.startswith("$ "):
            out.append((line[2:], []))
        elif out:
            out[-1][1].append(line)
    return out


def run_command(scene: Scene, command: str) -> tuple[int, str]:
    proc = subprocess.run(
        zcluster_argv(scene.real(command)),
        capture_output=True,
        text=True,
        timeout=RUN_TIMEOUT_S,
        cwd=scene.cwd,
        env=clean_env(),
    )
    return proc.returncode, proc.stderr + proc.stdout


CONSOLE = [b for b in BLOCKS if b.lang == "console" and b.mark != "not run"]


@pytest.mark.parametrize("block", CONSOLE, ids=lambda b: b.id)
def test_console_block_prints_what_it_shows(block: Block, tmp_path: Path) -> None:
    with scene_for(block.argument if block.mark == "scene" else "", tmp_path) as scene:
        status = 0
        for command, expected in steps(block.body):
            if command == "echo $?":
                assert [str(status)] == expected, (block.id, command)
                continue
            status, printed = run_command(scene, command)
            assert normalised(printed) == normalised("\n".join(expected)), (
                f"{block.id}: `{command}` prints\n{printed}"
            )


# ---------------------------------------------------------------- output blocks


def source_of(block: Block) -> Block:
    """The closest ```python or ```sh block before an output block."""
    page = [b for b in BLOCKS if b.page == block.page and b.index < block.index]
    for candidate in reversed(page):
        if candidate.lang in ("python", "sh"):
            return candidate
    raise AssertionError(f"{block.id}: no code block before this output")


def run_source(source: Block, scene: Scene) -> str:
    if source.lang == "python":
        script = scene.cwd / "block.py"
        script.write_text(scene.real(source.body))
        argv = [sys.executable, str(script)]
    else:
        commands = [line for line in source.body.splitlines() if line.startswith("zcluster")]
        assert len(commands) == 1, f"{source.id}: one zcluster command expected"
        argv = zcluster_argv(scene.real(commands[0]))
    proc = subprocess.run(
        argv, capture_output=True, text=True, timeout=RUN_TIMEOUT_S, cwd=scene.cwd, env=clean_env()
    )
    assert proc.returncode == 0, f"{source.id} exited {proc.returncode}:\n{proc.stderr}"
    return proc.stdout


OUTPUTS = [b for b in BLOCKS if b.mark == "output"]


@pytest.mark.parametrize("block", OUTPUTS, ids=lambda b: b.id)
def test_output_block_is_what_its_code_prints(block: Block, tmp_path: Path) -> None:
    source = source_of(block)
    scene_name = source.argument if source.mark == "scene" else ""
    with scene_for(scene_name, tmp_path) as scene:
        printed = run_source(source, scene)
    assert normalised(printed) == normalised(block.body), f"{source.id} prints\n{printed}"


LOGS = [b for b in BLOCKS if b.mark == "log"]


@pytest.mark.parametrize("block", LOGS, ids=lambda b: b.id)
def test_log_block_lines_appear_in_order(block: Block, tmp_path: Path) -> None:
    scene_name, node = block.argument.split()
    with scene_for(scene_name, tmp_path) as scene:  # it plays to its end
        logged = normalised(scene.log(node))
    position = 0
    for line in normalised(block.body):
        try:
            position = logged.index(line, position) + 1
        except ValueError:
            pytest.fail(
                f"{block.id}: {line!r} not logged (after line {position}):\n" + "\n".join(logged)
            )


# ---------------------------------------------------------------- usage lines


USAGES = [b for b in BLOCKS if b.lang == "text" and _USAGE.match(b.body)]


@pytest.mark.parametrize("block", USAGES, ids=lambda b: b.id)
def test_usage_line_is_the_commands(block: Block) -> None:
    words = block.body.split()
    command = [w for w in words[1:] if not w.startswith("[")][:1]
    proc = subprocess.run(
        [sys.executable, "-m", "zcluster", *command, "--help"],
        capture_output=True,
        text=True,
        timeout=RUN_TIMEOUT_S,
        env=clean_env(),
    )
    assert f"Usage: {block.body.strip()}" in proc.stdout, proc.stdout
