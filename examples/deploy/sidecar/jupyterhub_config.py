# The hub's configuration for the sidecar example: only what concerns jupyternetes-ssa. A real hub
# adds its authenticator, proxy and database settings here (or use Zero to JupyterHub with
# ../z2jh-values.yaml).
c = get_config()  # noqa: F821 (JupyterHub's config loader defines it)

c.JupyterHub.hub_ip = "0.0.0.0"
c.JupyterHub.hub_connect_ip = "hub"  # the Service in hub-service.yaml
c.JupyterHub.spawner_class = "jupyternetes"
c.JupyternetesSpawner.template_name = "hub-template"  # examples/hub-template.yaml
# The API token is sealed to the reconciler's public key, which the sidecar publishes in this
# namespace (ConfigMap jupyternetes-ssa-public-key): the default, nothing to configure.
