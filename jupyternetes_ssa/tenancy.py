"""Which namespaces a template serves: the tenancy rule, as one pure decision.

Whoever may create an instance must not thereby get every template of the cluster (an admin's
privileged debugging template, another team's). So a cross-namespace reference needs a grant
written where the template lives, by whoever may edit templates there, as Gateway API's
ReferenceGrant does: a template serves its own namespace, the namespaces it lists in
`spec.instanceNamespaces` ("*": all), those whose labels match `spec.instanceNamespaceSelector`,
and, when it sits in a catalogue namespace of the reconciler (`--catalog-namespace`), every
namespace the reconciler serves.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import Any, NoReturn

from jupyternetes_ssa.errors import TemplateNotAllowed
from jupyternetes_ssa.types import Manifest

EVERY_NAMESPACE = "*"
NAMES = "spec.instanceNamespaces"
SELECTOR = "spec.instanceNamespaceSelector"
OPERATORS = ("In", "NotIn", "Exists", "DoesNotExist")


def template_key(instance: Manifest) -> tuple[str, str]:
    """(namespace, name) of the template an instance names; no namespace means its own."""
    ref, own = _at(instance, "spec", "template"), _at(instance, "metadata", "namespace")
    return _at(ref, "namespace") or own or "", _at(ref, "name") or ""


def _at(doc: Any, *keys: str) -> Any:
    for key in keys:
        doc = doc.get(key) if isinstance(doc, Mapping) else None
    return doc


def uses_selector(template: Manifest) -> bool:
    """Whether deciding for this template may need namespace labels."""
    return (template.get("spec") or {}).get("instanceNamespaceSelector") is not None


def check_grant(
    template: Manifest,
    instance_namespace: str,
    *,
    catalog: Iterable[str] = (),
    namespace_labels: Mapping[str, str] | None = None,
    subject: str = "",
) -> str:
    """Return the grant by which `template` serves instances of `instance_namespace`, or raise
    TemplateNotAllowed (naming the template, the namespace and how to grant it).

    `namespace_labels` is None when the reconciler could not read them: a selector then grants
    nothing, since an unknown namespace must not be assumed to match.
    """
    meta = template.get("metadata") or {}
    t_ns, t_name = meta.get("namespace") or "", meta.get("name") or "?"
    if instance_namespace == t_ns:
        return "the template's own namespace"
    if t_ns in set(catalog):
        return f"--catalog-namespace {t_ns}"
    spec = template.get("spec") or {}
    names = spec.get("instanceNamespaces")
    if names is not None and not _string_list(names):
        _malformed(t_ns, t_name, instance_namespace, subject, f"{NAMES}: must be a list of names")
    if names and (EVERY_NAMESPACE in names or instance_namespace in names):
        return NAMES
    selector = spec.get("instanceNamespaceSelector")
    if selector is not None:
        if problem := selector_problem(selector):
            _malformed(t_ns, t_name, instance_namespace, subject, f"{SELECTOR}{problem}")
        if namespace_labels is None:
            raise TemplateNotAllowed(
                f"JupyterNotebookTemplate {t_ns}/{t_name} grants namespaces by {SELECTOR}, "
                f"and the reconciler cannot read the labels of namespace {instance_namespace!r}",
                subject=subject,
                path="spec.template",
                fix="the cluster admin can give the reconciler list and watch on namespaces "
                f"(a ClusterRole), or the template can name {instance_namespace!r} in {NAMES}",
            )
        if selector_matches(selector, namespace_labels):
            return SELECTOR
    _refuse(t_ns, t_name, instance_namespace, subject)


def _string_list(value: Any) -> bool:
    return isinstance(value, list) and all(isinstance(v, str) for v in value)


def _refuse(t_ns: str, t_name: str, ns: str, subject: str) -> NoReturn:
    raise TemplateNotAllowed(
        f"JupyterNotebookTemplate {t_ns}/{t_name} does not serve namespace {ns!r}",
        subject=subject,
        path="spec.template",
        fix=f"whoever may edit templates in {t_ns!r} can grant it: add {ns!r} to the template's "
        f"{NAMES}, or give it a {SELECTOR} matching the labels of {ns!r}; or the cluster admin "
        f"can make {t_ns!r} a catalogue (reconciler option --catalog-namespace {t_ns}); or use "
        f"a template in {ns!r}",
    )


def _malformed(t_ns: str, t_name: str, ns: str, subject: str, problem: str) -> NoReturn:
    raise TemplateNotAllowed(
        f"JupyterNotebookTemplate {t_ns}/{t_name} does not serve namespace {ns!r}: its grant "
        f"is invalid at {problem}",
        subject=subject,
        path="spec.template",
        fix=f"whoever may edit templates in {t_ns!r} must correct the template's grant",
    )


def selector_problem(selector: Any) -> str:
    """What is wrong with a LabelSelector ('' if nothing), as '<path suffix>: <problem>'."""
    if not isinstance(selector, Mapping):
        return ": must be a LabelSelector (matchLabels, matchExpressions)"
    match_labels = selector.get("matchLabels") or {}
    if not isinstance(match_labels, Mapping) or not all(
        isinstance(v, str) for v in match_labels.values()
    ):
        return ".matchLabels: must be a map of strings"
    expressions = selector.get("matchExpressions") or []
    if not isinstance(expressions, list):
        return ".matchExpressions: must be a list"
    for i, expr in enumerate(expressions):
        where = f".matchExpressions[{i}]"
        if not isinstance(expr, Mapping) or not isinstance(expr.get("key"), str):
            return f"{where}: needs a key"
        op, values = expr.get("operator"), expr.get("values") or []
        if op not in OPERATORS:
            return f"{where}.operator: must be one of {', '.join(OPERATORS)}"
        if not _string_list(values):
            return f"{where}.values: must be a list of strings"
        if (op in ("In", "NotIn")) != bool(values):
            return f"{where}.values: {op} needs {'some' if op in ('In', 'NotIn') else 'no'} values"
    return ""


def selector_matches(selector: Mapping[str, Any], labels: Mapping[str, str]) -> bool:
    """Kubernetes LabelSelector semantics (a valid selector; {} matches every namespace)."""
    for key, value in (selector.get("matchLabels") or {}).items():
        if labels.get(key) != value:
            return False
    for expr in selector.get("matchExpressions") or []:
        key, op, values = expr["key"], expr["operator"], expr.get("values") or []
        present = key in labels
        holds = {
            "In": present and labels.get(key) in values,
            "NotIn": not present or labels.get(key) not in values,
            "Exists": present,
            "DoesNotExist": not present,
        }[op]
        if not holds:
            return False
    return True
