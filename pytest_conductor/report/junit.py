"""JUnit XML: each node's properties, and the testcase names CI viewers show.

Pure: no pytest import. The properties travel on the reports' ``user_properties`` (so
through xdist too); the names are set by rewriting the finished file, because junitxml
offers no public way to name a testcase whose report came from an xdist worker.
"""

from __future__ import annotations

import xml.etree.ElementTree as ET
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path

from pytest_conductor.plan.reader import Node
from pytest_conductor.util.atomic import atomic_write

__all__ = [
    "JUNIT_PROPERTIES_MODES",
    "JUNIT_PROPERTY_KEYS",
    "junit_properties",
    "name_testcases",
    "set_properties",
]

#: The properties each node's testcase carries in ``--junitxml``, in this order.
JUNIT_PROPERTY_KEYS = (
    "task_id",
    "name",
    "type",
    "phase",
    "files",
    "worker_id",
    "attempts",
    "blocked_by",
)


#: ``--conductor-junit-properties``: each node's ``<properties>`` under its ``<testcase>``
#: (pytest's own ``record_property`` form), or none (for consumers that validate against
#: the Jenkins xunit schema, which allows properties under ``<testsuite>`` only).
JUNIT_PROPERTIES_MODES = ("testcase", "none")


def junit_properties(
    node: Node,
    blocked_by: str | None,
    *,
    worker_id: str = "",
    attempts: int | None = None,
) -> list[tuple[str, str]]:
    """The JUnit properties of one node's testcase (keys: :data:`JUNIT_PROPERTY_KEYS`).

    ``blocked_by`` names the failed (or deselected) node at the root of the chain that
    blocked this one; None when it was not blocked. ``attempts`` defaults to 0 for a
    blocked node (it never ran) and 1 otherwise (verify-only runs each node once).
    """
    if attempts is None:
        attempts = 0 if blocked_by else 1
    return [
        ("task_id", node.id),
        ("name", node.name),
        ("type", node.type),
        ("phase", node.phase or ""),
        ("files", ", ".join(node.files)),
        ("worker_id", worker_id),
        ("attempts", str(attempts)),
        ("blocked_by", blocked_by or ""),
    ]


def set_properties(target: list[tuple[str, object]], props: Sequence[tuple[str, str]]) -> None:
    """Set each property in place (replacing an earlier value of the same key) or append."""
    where = {key: i for i, (key, _) in enumerate(target)}
    for key, value in props:
        if key in where:
            target[where[key]] = (key, value)
        else:
            where[key] = len(target)
            target.append((key, value))


def name_testcases(
    path: Path,
    nodes: Mapping[str, Node],
    *,
    classname: str,
    derived: str,
    properties_of: Callable[[Node], list[tuple[str, str]]],
    failure_types: Mapping[str, str] | None = None,
    properties: str = "testcase",
) -> bool:
    """Rename this plan's testcases in the JUnit file at ``path``; True if it changed.

    Each of them also loses its empty properties (all of them with ``properties="none"``),
    and its ``<failure>`` gets ``type=failure_types[task]`` (the kind of what failed).

    ``classname="conductor.<track>"`` (the caller puts ``--junit-prefix`` in front),
    ``name="1.1 Create data store"``. A testcase is this plan's when it carries a
    ``task_id`` property of a node under its original name, or when junitxml's own
    classname for the plan (``derived``) names it: junitxml writes properties from
    teardown reports only, and a node whose worker crashed has none, so such a testcase
    gets ``properties_of(node)`` here. Raises OSError or ``ET.ParseError``.
    """
    tree = ET.parse(path)
    changed = False
    for case in tree.iter("testcase"):
        task = next(
            (p.get("value") for p in case.iter("property") if p.get("name") == "task_id"),
            None,
        )
        if task is None and derived and case.get("classname") == derived:
            task = case.get("name")
            if task is not None and task in nodes:
                _prepend_properties(case, properties_of(nodes[task]))
        if task is None or task not in nodes or case.get("name") != task:
            continue
        name = nodes[task].name
        case.set("classname", classname)
        case.set("name", task if name in ("", task) else f"{task} {name}")
        _trim_properties(case, keep=properties != "none")
        kind = (failure_types or {}).get(task)
        for failure in case.findall("failure"):
            if kind:
                failure.set("type", kind)
        changed = True
    if changed:
        atomic_write(path, ET.tostring(tree.getroot(), encoding="utf-8", xml_declaration=True))
    return changed


def _prepend_properties(case: ET.Element, props: Sequence[tuple[str, str]]) -> None:
    """Give a testcase a ``<properties>`` element first, as junitxml places it."""
    element = ET.Element("properties")
    for key, value in props:
        ET.SubElement(element, "property", {"name": key, "value": value})
    case.insert(0, element)


def _trim_properties(case: ET.Element, *, keep: bool) -> None:
    """Drop a testcase's empty properties (``phase=""`` says nothing), or all of them."""
    for element in case.findall("properties"):
        for prop in element.findall("property"):
            if not keep or not prop.get("value"):
                element.remove(prop)
        if not len(element):
            case.remove(element)
