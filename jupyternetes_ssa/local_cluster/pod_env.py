"""The environment a kubelet gives a container: ``envFrom``, ``env`` and ``$(VAR)`` expansion.

Plain values with ``$(VAR)`` references to earlier entries expanded (``$$`` escapes),
``secretKeyRef``/``configMapKeyRef`` (``optional`` honoured) and ``fieldRef`` (name, namespace,
uid, labels, annotations, node, service account, pod and host IPs). A Secret or ConfigMap that is
missing raises :class:`ConfigError`, the kubelet's ``CreateContainerConfigError``.
"""

from __future__ import annotations

import base64
import os
import re
import sys
from collections.abc import Mapping
from typing import Any

from .kube import request
from .runtime import Object

ENV_NAME = re.compile(r"^[-._a-zA-Z][-._a-zA-Z0-9]*$")


class ConfigError(Exception):
    """The container's env cannot be resolved (yet): the kubelet's CreateContainerConfigError."""


# --- $(VAR) expansion, as k8s.io/kubernetes/third_party/forked/golang/expansion ------------------


def expand(text: str, env: Mapping[str, str]) -> str:
    """Expand ``$(VAR)`` from ``env``; unknown references stay as they are, ``$$`` is ``$``."""
    out: list[str] = []
    checkpoint = 0
    cursor = 0
    while cursor < len(text):
        if text[cursor] == "$" and cursor + 1 < len(text):
            out.append(text[checkpoint:cursor])
            following = text[cursor + 1]
            if following == "$":  # an escaped operator
                out.append("$")
                cursor += 1
            elif following == "(":
                closer = text.find(")", cursor + 2)
                if closer == -1:  # an incomplete reference: keep "$(" and go on after it
                    out.append("$(")
                    cursor += 1
                else:
                    name = text[cursor + 2 : closer]
                    out.append(env.get(name, f"$({name})"))
                    cursor = closer
            else:  # a "$" that starts no expression
                out.append("$" + following)
                cursor += 1
            checkpoint = cursor + 1
        cursor += 1
    return "".join(out) + text[checkpoint:]


# --- environment ---------------------------------------------------------------------------------


class Lookup:
    """Secrets and ConfigMaps of one namespace, each read once per launch."""

    def __init__(self, api: Any, namespace: str) -> None:
        self.api = api
        self.namespace = namespace
        self._cache: dict[tuple[str, str], Object | None] = {}

    async def data(self, kind: str, name: str, optional: bool) -> dict[str, str] | None:
        """The object's data (Secret values decoded); None if it is absent and ``optional``."""
        key = (kind, name)
        if key not in self._cache:
            path = f"/api/v1/namespaces/{self.namespace}/{kind}s/{name}"
            try:
                self._cache[key] = await request(self.api, "GET", path, ignore=(404,))
            except Exception as error:
                raise ConfigError(f"cannot read {kind} {self.namespace}/{name}: {error}") from error
        obj = self._cache[key]
        if obj is None:
            if optional:
                return None
            raise ConfigError(f'{kind} "{name}" not found')
        if kind == "secret":
            return {
                k: base64.b64decode(v).decode("utf-8", "surrogateescape")
                for k, v in (obj.get("data") or {}).items()
            }
        return dict(obj.get("data") or {})

    async def value(self, kind: str, ref: Object) -> str | None:
        """The value of a ``secretKeyRef``/``configMapKeyRef``; None when optional and absent."""
        optional = bool(ref.get("optional"))
        data = await self.data(kind, ref.get("name", ""), optional)
        if data is None:
            return None
        if ref["key"] not in data:
            if optional:
                return None
            kind_name = "Secret" if kind == "secret" else "ConfigMap"
            raise ConfigError(
                f"couldn't find key {ref['key']} in {kind_name} {self.namespace}/{ref.get('name')}"
            )
        return data[ref["key"]]


def field_value(pod: Object, path: str, pod_ip: str, host_ip: str) -> str:
    """A ``fieldRef`` as the kubelet resolves it."""
    meta, spec = pod["metadata"], pod["spec"]
    simple = {
        "metadata.name": meta.get("name", ""),
        "metadata.namespace": meta.get("namespace", ""),
        "metadata.uid": meta.get("uid", ""),
        "spec.nodeName": spec.get("nodeName", ""),
        "spec.serviceAccountName": spec.get("serviceAccountName", ""),
        "status.podIP": pod_ip,
        "status.podIPs": pod_ip,
        "status.hostIP": host_ip,
        "status.hostIPs": host_ip,
    }
    if path in simple:
        return simple[path]
    match = re.fullmatch(r"metadata\.(labels|annotations)(?:\['(.*)'\])?", path)
    if match:
        values = meta.get(match.group(1)) or {}
        if match.group(2) is not None:
            return values.get(match.group(2), "")
        return "\n".join(f'{k}="{v}"' for k, v in sorted(values.items()))
    raise ConfigError(f"unsupported fieldRef {path!r}")


async def container_env(
    lookup: Lookup, pod: Object, container: Object, pod_ip: str, host_ip: str
) -> dict[str, str]:
    """The variables the container defines (``envFrom``, then ``env``), resolved in order."""
    env: dict[str, str] = {}
    for source in container.get("envFrom") or []:
        kind, ref = (
            ("secret", source["secretRef"])
            if "secretRef" in source
            else ("configmap", source.get("configMapRef") or {})
        )
        data = await lookup.data(kind, ref.get("name", ""), bool(ref.get("optional")))
        for key, value in (data or {}).items():
            name = source.get("prefix", "") + key
            if ENV_NAME.match(name):
                env[name] = value
    for var in container.get("env") or []:
        name, value = var["name"], var.get("value", "")
        if value:
            env[name] = expand(value, env)
            continue
        source = var.get("valueFrom")
        if not source:
            env[name] = ""
        elif "fieldRef" in source:
            env[name] = field_value(pod, source["fieldRef"]["fieldPath"], pod_ip, host_ip)
        elif "secretKeyRef" in source or "configMapKeyRef" in source:
            kind = "secret" if "secretKeyRef" in source else "configmap"
            resolved = await lookup.value(
                kind, source.get("secretKeyRef") or source["configMapKeyRef"]
            )
            if resolved is not None:
                env[name] = resolved
        else:
            raise ConfigError(f"env {name}: unsupported valueFrom {sorted(source)}")
    return env


def base_path() -> str:
    """The agent's PATH with its own interpreter's bin dir first (the venv's tools)."""
    path = os.environ.get("PATH") or os.defpath
    own = os.path.dirname(sys.executable)
    parts = path.split(os.pathsep)
    return path if own in parts else os.pathsep.join([own, *parts])
