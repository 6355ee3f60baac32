"""Label and annotation keys put on everything we create, and the selectors built from them.

The `jupyternetes.kadense.io/*` keys are the original Jupyternetes' own, kept so that existing
selectors keep working; `app.kubernetes.io/managed-by` is what garbage collection selects on.
"""

MANAGED_BY = "app.kubernetes.io/managed-by"
MANAGED_BY_VALUE = "jupyternetes-ssa"
INSTANCE = "jupyternetes.kadense.io/instance"
INSTANCE_NAMESPACE = "jupyternetes.kadense.io/instanceNamespace"
TEMPLATE = "jupyternetes.kadense.io/template"
TEMPLATE_NAMESPACE = "jupyternetes.kadense.io/templateNamespace"
SHARD_BUCKET = "jupyternetes-ssa.kadense.io/shard-bucket"  # shard.bucket_of the instance
POD_ITEM = "jupyternetes.kadense.io/podName"
PVC_ITEM = "jupyternetes.kadense.io/pvcName"
OTHER_ITEM = "jupyternetes.kadense.io/otherResourceName"

# Annotations the reconciler owns.
APPLIED_HASH = "jupyternetes-ssa.kadense.io/applied-hash"
DELETION_POLICY = "jupyternetes-ssa.kadense.io/deletion-policy"

ITEM_LABEL = {"pods": POD_ITEM, "pvcs": PVC_ITEM, "otherResources": OTHER_ITEM}

MANAGED_SELECTOR = f"{MANAGED_BY}={MANAGED_BY_VALUE}"
UNBUCKETED_SELECTOR = f"{MANAGED_SELECTOR},!{SHARD_BUCKET}"  # made before shard buckets


def instance_of(obj: dict) -> tuple[str, str]:
    """(namespace, instance label value) that an object's labels name."""
    meta = obj.get("metadata", {})
    lbl = meta.get("labels") or {}
    return lbl.get(INSTANCE_NAMESPACE, meta.get("namespace", "")), lbl.get(INSTANCE, "")
