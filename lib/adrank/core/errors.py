"""Errors a person can act on: a job prints their one line and exits non-zero, no traceback.

:class:`InputError` is raised by the library for bad inputs or requests. :func:`explain`
turns the failures a person meets outside the library's own checks (a missing path or
table, a lost concurrent Delta commit, no Java, no Delta jars, a port in use, a full disk,
a file that no longer matches its Hadoop ``.crc``) into one line naming the cause and what
to do. It reads the exception chain (``__cause__``/``__context__``) and, for errors raised
in the JVM, the Java exception and its causes (py4j's ``java_exception`` or pyspark's
``_origin``) as text, with regexes: pyspark and py4j are never imported here. An error it
does not know is summarised by :func:`summary` from its innermost cause that has a message
(the wrapper of a failed Spark job says nothing).
"""

from __future__ import annotations

import errno
import os
import re
import shutil
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

from adrank.core import layout


class InputError(ValueError):
    """The inputs or the request break a rule (a missing date, a stray file, no held-out day).

    Raised before anything is written; the message is one line that names what is wrong and
    what to do. :func:`adrank.runtime.runs.run_job` prints it and returns exit status 1.
    """


# Library errors whose message is already one actionable line (matched by name: the
# frame imports no job package).
ONE_LINE_ERRORS = frozenset({"adrank.train.launch.TrainingFailed", "adrank.embed.run.EmbedError"})
TABLE_NOTE = "Delta table: "
MAX_CHAIN = 12
MAX_JAVA_CAUSES = 8
WRITTEN_BY = {
    layout.SKU_IMAGES: "build_tables", layout.TRAINING_EXAMPLES: "build_tables", layout.QUARANTINE: "build_tables",
    layout.IMPRESSION_IDS: "build_tables",
    layout.SKU_EMBEDDINGS: "embed_catalog",
    layout.PAIRS_TRAIN: "train --stage pairwise", layout.PAIRS_HOLDOUT: "train --stage pairwise",
    layout.JOINT_TRAIN: "train --stage joint", layout.JOINT_HOLDOUT: "train --stage joint",
    **{table: "recommend" for table in layout.RECOMMENDATION_TABLES},
}
SPARK_PORTS = {"sparkDriver": "spark.driver.port", "SparkUI": "spark.ui.port",
               "sparkBlockManager": "spark.blockManager.port", "sparkDriverBlockManager": "spark.blockManager.port"}
CONCURRENT = re.compile(r"\b(ConcurrentAppendException|ConcurrentDeleteReadException|ConcurrentDeleteDeleteException"
                        r"|MetadataChangedException|ConcurrentWriteException|ConcurrentTransactionException"
                        r"|ProtocolChangedException|DeltaConcurrentModificationException)\b:?\s*(.*)")
DELTA_CLASSES = re.compile(r"(?:ClassNotFoundException|NoClassDefFoundError): ((?:io|org/apache/spark/sql)[./]delta\S*"
                           r"|org\.apache\.spark\.sql\.delta\S*)"
                           r"|Cannot find catalog plugin class for catalog '\w+': (\S*delta\S*)"
                           r"|Failed to find the data source: (delta)\b")
DELTA_TABLE_MISSING = (
    re.compile(r"\[DELTA_(?:TABLE_NOT_FOUND|MISSING_DELTA_TABLE|PATH_DOES_NOT_EXIST)\][^`]*`([^`]+)`"),
    re.compile(r"`?([^\s`]+)`? is not a Delta table"),
    re.compile(r"No such file or directory: (\S+?)/_delta_log\b"),
)
PATH_MISSING = (
    re.compile(r"\[PATH_NOT_FOUND\] Path does not exist: (\S+?)\.?(?:\s+SQLSTATE|\s*$)", re.MULTILINE),
    re.compile(r"java\.io\.FileNotFoundException: (?:File )?(\S+?) does not exist"),
    re.compile(r"java\.io\.FileNotFoundException: No such file or directory: (\S+)"),
)
CHECKSUM_ERROR = re.compile(r"ChecksumException: Checksum error: (\S+?) at (\d+)")
CAUSED_BY = re.compile(r"^\s*Caused by: (\S+?: .*)$", re.MULTILINE)
MODEL_MISSING = re.compile(r"no model of stage '(\w+)' in (\S+)")
VERSION_MISSING = re.compile(r"no version (\d+) of stage '(\w+)' at (\S+)")


@contextmanager
def naming_table(path: str) -> Iterator[None]:
    """Note on an exception raised inside which Delta table was being written (for :func:`explain`).

    Delta's conflict exceptions do not name the table; a write wrapped in this adds the note
    ``Delta table: <path>`` (shown by tracebacks too) and re-raises.
    """
    try:
        yield
    except BaseException as exc:
        exc.add_note(TABLE_NOTE + path)
        raise


@dataclass(frozen=True)
class _Link:
    """One exception of the chain, with its text: Python message, Java exception and causes, notes."""

    exc: BaseException
    text: str


def explain(exc: BaseException) -> str | None:
    """One line naming the cause of ``exc`` and what to do, or None when it is not one we know.

    The outermost exception of the chain that a rule recognises wins (an :class:`InputError`
    raised over a lower-level error keeps its own words).
    """
    links = [_Link(link, _text(link)) for link in _chain(exc)]
    notes = "\n".join(link.text for link in links)
    for link in links:
        for rule in RULES:
            line = rule(link, notes)
            if line:
                return line.splitlines()[0]
    return None


def error_type(exc: BaseException) -> str:
    """The exception's type: the Java class for a py4j ``Py4JJavaError``, else the Python class name."""
    java = _java_lines(exc)
    if java and hasattr(exc, "java_exception"):
        return java[0].split(":", 1)[0].strip()
    return type(exc).__name__


def summary(exc: BaseException) -> str:
    """``<type>: <first line>`` of ``exc``, or of its innermost cause that has a message.

    A failed Spark job wraps its cause (``SparkException: Job aborted due to stage failure:
    ... Exception thrown in awaitResult:``, the wrapper's message ends where the cause's
    would start): the line then names the innermost cause with a message and the type it
    was wrapped in, ``<cause type>: <message> (inside <type>)``.
    """
    outer = _outer_line(exc)
    inner = next((cause for cause in reversed(_causes(exc)) if _has_message(cause)), None)
    if inner is None or inner == outer:
        return outer[:500]
    return f"{inner} (inside {outer.split(':', 1)[0]})"[:500]


def _outer_line(exc: BaseException) -> str:
    """``<type>: <first line>`` of ``exc`` itself (the Java exception's, for a ``Py4JJavaError``)."""
    java = _java_lines(exc)
    if java and hasattr(exc, "java_exception"):
        return _first_line(java[0]) or error_type(exc)
    first = _first_line(_message(exc))
    return f"{type(exc).__name__}: {first}" if first else type(exc).__name__


def _causes(exc: BaseException) -> list[str]:
    """``<type>: <first line>`` of each cause of ``exc``, outermost first (``exc`` not included).

    The causes of an error raised in the JVM are its Java exception's (``getCause()``); when
    the Java objects are gone, the ``Caused by:`` lines of its text. The Python chain is not
    walked: an exception raised over another one says what it means.
    """
    java = _java_lines(exc)
    causes = java[1:] if java else CAUSED_BY.findall(_message(exc))
    return [_first_line(cause) for cause in causes]


def _first_line(text: str) -> str:
    return (text.strip().splitlines() or [""])[0].strip()


def _has_message(line: str) -> bool:
    """``Type: message`` with a message: not ``SparkException: Exception thrown in awaitResult:``."""
    _, _, message = line.partition(": ")
    return bool(message.strip()) and not message.rstrip().endswith(":")


def _message(exc: BaseException) -> str:
    try:
        return str(exc)
    except Exception:  # noqa: BLE001 - py4j's str() asks the JVM, which may be gone
        return ""


def _chain(exc: BaseException) -> Iterator[BaseException]:
    """``exc``, then its causes and contexts, outermost first, each once."""
    seen: set[int] = set()
    todo = [exc]
    while todo and len(seen) < MAX_CHAIN:
        link = todo.pop(0)
        if id(link) in seen:
            continue
        seen.add(id(link))
        yield link
        todo += [e for e in (link.__cause__, link.__context__) if e is not None]


def _text(exc: BaseException) -> str:
    """Everything an exception says: type and message, its Java exception and causes, its notes."""
    parts = [f"{type(exc).__name__}: {_message(exc)}", *_java_lines(exc), *getattr(exc, "__notes__", [])]
    return "\n".join(parts)


def _java_lines(exc: BaseException) -> list[str]:
    """``toString()`` of the Java exception behind ``exc`` and of its causes (empty if none)."""
    java = getattr(exc, "java_exception", None) or getattr(exc, "_origin", None)
    lines: list[str] = []
    while java is not None and len(lines) < MAX_JAVA_CAUSES:
        try:
            lines.append(str(java.toString()))
            java = java.getCause()
        except Exception:  # noqa: BLE001 - not a Java object, or the JVM is gone
            break
    return lines


def _qualnames(exc: BaseException) -> set[str]:
    return {f"{cls.__module__}.{cls.__qualname__}" for cls in type(exc).__mro__}


def _one_line(link: _Link, notes: str) -> str | None:
    """An InputError, TrainingFailed (a Horovod rank failed) or EmbedError: their message is the line."""
    if isinstance(link.exc, InputError) or _qualnames(link.exc) & ONE_LINE_ERRORS:
        return str(link.exc).strip() or type(link.exc).__name__
    return None


def _java_missing(link: _Link, notes: str) -> str | None:
    """pyspark could not start the JVM (JAVA_GATEWAY_EXITED)."""
    if "JAVA_GATEWAY_EXITED" not in link.text and "Java gateway process exited" not in link.text:
        return None
    java_home = os.environ.get("JAVA_HOME")
    java = shutil.which("java")
    fix = "install Java 17+ (e.g. apt-get install openjdk-17-jre-headless) and put it on PATH or set JAVA_HOME"
    if java_home and not Path(java_home, "bin", "java").exists():
        return f"Spark could not start Java: JAVA_HOME={java_home} has no bin/java: {fix}"
    if not java_home and java is None:
        return f"Spark could not start Java (java not on PATH and JAVA_HOME unset): {fix}"
    where = Path(java_home, "bin", "java") if java_home else java
    return (f"Spark could not start Java ({where}): the JVM exited at start (see the lines above: a Java "
            f"older than 17, or too little memory for spark.driver_memory?): {fix}")


def _lost_commit(link: _Link, notes: str) -> str | None:
    """A Delta transaction lost to a concurrent one (optimistic concurrency)."""
    found = CONCURRENT.search(link.text)
    if not found:
        return None
    tables = re.findall(re.escape(TABLE_NOTE) + r"(\S+)", notes)
    table = f"{_table_name(tables[0])} ({tables[0]})" if tables else "a Delta table"
    winner = re.search(r'"operation":"([^"]+)"', link.text)
    detail = found.group(2).split(". ")[0].strip().rstrip(".")
    detail = re.sub(r"^\[[A-Z_.]+\]\s*\w+:\s*", "", detail)
    won = f"its {winner.group(1)}" if winner else "its commit"
    return (f"lost a concurrent commit on {table}: another run committed to it first ({won}; "
            f"{found.group(1)}: {detail}); nothing was half-written (Delta commits are atomic): rerun the job")


def _delta_jars_missing(link: _Link, notes: str) -> str | None:
    """Spark runs without the Delta Lake jars."""
    found = DELTA_CLASSES.search(link.text)
    if not found:
        return None
    missing = next(group for group in found.groups() if group)
    return (f"the Delta Lake jars are not on Spark's classpath ({missing} not found): rerun scripts/bootstrap.sh "
            "(it puts them in .cache/jars), and submit with ./spark-submit.sh (it adds them with --jars)")


def _model_missing(link: _Link, notes: str) -> str | None:
    """The model registry has no such stage or version (adrank.train.registry)."""
    found = VERSION_MISSING.search(link.text)
    if found:
        version, stage, path = found.groups()
        versions = _registered_versions(Path(path).parent)
        which = f"registered versions: {', '.join(map(str, versions))}" if versions else "none is registered"
        return (f"model version {version} of stage '{stage}' not found at {path} ({which}): pick a registered "
                f"version, or train one with ./spark-submit.sh train --stage {stage}")
    found = MODEL_MISSING.search(link.text)
    if found:
        stage, folder = found.groups()
        return (f"no registered '{stage}' model in {folder}: train one with ./spark-submit.sh train --stage {stage} "
                "(or check storage.local_root / storage.root in the config)")
    return None


def _registered_versions(folder: Path) -> list[int]:
    try:
        return sorted(int(p.name[1:]) for p in folder.iterdir() if re.fullmatch(r"v\d+", p.name))
    except OSError:
        return []


def _delta_table_missing(link: _Link, notes: str) -> str | None:
    """A read of a Delta table that is not there (or a folder that is not a Delta table)."""
    path = _first_match(DELTA_TABLE_MISSING, link.text)
    if path is None:
        return None
    name = _table_name(path)
    job = WRITTEN_BY.get(name)
    todo = f"it is written by {job.split()[0]}: run ./spark-submit.sh {job} first" if job else \
        "run the job that writes it first"
    return f"no Delta table at {path}: {todo} (or check storage.root in the config)"


def _disk_full(link: _Link, notes: str) -> str | None:
    """ENOSPC, from Python or from the JVM."""
    exc = link.exc
    python = isinstance(exc, OSError) and exc.errno == errno.ENOSPC
    if not python and "No space left on device" not in link.text:
        return None
    path = exc.filename if isinstance(exc, OSError) and exc.filename else None
    where = f" writing {path}" if path else ""
    filesystem = _filesystem(str(path)) if path else ""
    places = ("that filesystem" if path else
              "the disks of storage.root, storage.local_root and Spark's scratch folder (spark.local.dir, /tmp by "
              "default)")
    return (f"out of disk space{where} (No space left on device{filesystem}): free space on {places}, or point "
            "storage.root / storage.local_root / spark.local.dir at a larger disk; then rerun the job")


def _filesystem(path: str) -> str:
    """``; filesystem /mnt, 12 MB free`` for the filesystem holding ``path`` (empty if unknown)."""
    folder = Path(path).absolute()
    while not folder.exists() and folder != folder.parent:
        folder = folder.parent
    mount = folder
    while not os.path.ismount(mount) and mount != mount.parent:
        mount = mount.parent
    try:
        free = shutil.disk_usage(folder).free
    except OSError:
        return ""
    return f"; filesystem {mount}, {free // 2**20} MB free"


def _port_in_use(link: _Link, notes: str) -> str | None:
    """A listening socket could not bind (Java BindException, Python EADDRINUSE)."""
    exc = link.exc
    python = isinstance(exc, OSError) and exc.errno == errno.EADDRINUSE
    if not python and "BindException" not in link.text and "Address already in use" not in link.text:
        return None
    service = re.search(r"Service '([^']+)'", link.text)
    port = re.search(r"\bport (\d+)", link.text)
    if "Cannot assign requested address" in link.text:
        return ("Spark cannot bind to this machine's address (Cannot assign requested address): set "
                "--set spark.conf.spark.driver.bindAddress=127.0.0.1 (and spark.driver.host), or fix the hostname")
    key = SPARK_PORTS.get(service.group(1)) if service else None
    what = f"port {port.group(1)}" if port else "a port"
    by = f" (Spark service '{service.group(1)}')" if service else ""
    if key:
        return f"{what} is already in use{by}: free it, or give {key} a free port (--set spark.conf.{key}=PORT)"
    return (f"{what} is already in use{by} (Address already in use): free it (ss -ltnp shows who holds it), or "
            "move Spark's ports: --set spark.conf.spark.ui.port=PORT, spark.conf.spark.driver.port=PORT, "
            "spark.conf.spark.blockManager.port=PORT")


def _path_missing(link: _Link, notes: str) -> str | None:
    """A path that does not exist (Spark's PATH_NOT_FOUND, Java or Python FileNotFound)."""
    exc = link.exc
    path = _first_match(PATH_MISSING, link.text)
    if path is None and isinstance(exc, FileNotFoundError):
        path = str(exc.filename) if exc.filename else (str(exc) or "?")
    if path is None:
        return None
    return (f"path not found: {path}: check inputs.root and storage.root in the config (--conf-file, --set), "
            "or create it (./spark-submit.sh generate_data writes sample inputs)")


def _stale_checksum(link: _Link, notes: str) -> str | None:
    """A file that does not match its Hadoop checksum file (``.<name>.crc`` beside it).

    Spark (Hadoop's local file system) writes a ``.crc`` beside each file and checks it on
    read; a tool that rewrites the file without Hadoop leaves the old one behind.
    """
    found = CHECKSUM_ERROR.search(link.text)
    if not found:
        return None
    path, offset = found.groups()
    folder, _, name = path.rpartition("/")
    crc = f"{folder}/.{name}.crc"
    local = crc.removeprefix("file:") if crc.startswith("file:/") else crc
    return (f"ChecksumException: {path} does not match its checksum file {crc} (at byte {offset}): the file was "
            f"rewritten without Hadoop, leaving Spark's old .crc beside it (or it is corrupt): if the file is right, "
            f"delete {local}, else rewrite the file with Spark; then rerun the job")


def _first_match(patterns: tuple[re.Pattern[str], ...], text: str) -> str | None:
    for pattern in patterns:
        found = pattern.search(text)
        if found:
            return found.group(1)
    return None


def _table_name(path: str) -> str:
    return path.rstrip("/").rsplit("/", 1)[-1]


Rule = Callable[[_Link, str], str | None]
RULES: tuple[Rule, ...] = (_one_line, _java_missing, _lost_commit, _delta_jars_missing, _model_missing,
                           _delta_table_missing, _disk_full, _port_in_use, _stale_checksum, _path_missing)
"""Tried in order on each exception of the chain: the specific before the general (a missing
model is a FileNotFoundError, a full disk an OSError)."""

__all__ = ["InputError", "error_type", "explain", "naming_table", "summary"]
