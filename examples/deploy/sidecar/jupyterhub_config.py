# The hub's configuration for the sidecar example: only what concerns jupyternetes-ssa. A real hub
# adds its authenticator, proxy and database settings here (or use Zero to JupyterHub with
# ../z2jh-values.yaml).
c = get_config()  # noqa: F821 (JupyterHub's config loader defines it)

c.JupyterHub.hub_ip = "0.0.0.0"
c.JupyterHub.hub_connect_ip = "hub"  # the Service in hub-service.yaml
c.JupyterHub.spawner_class = "jupyternetes"
c.JupyternetesSpawner.template_name = "hub-template"  # examples/hub-template.yaml
# The token goes to a Secret owned by the instance, not into the instance. Needs the Secret rights
# of hub-rbac.yaml, which ../hub-secrets-guard narrows to exactly those Secrets.
c.JupyternetesSpawner.api_token_secret = True
