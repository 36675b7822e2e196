"""Run configurations, one module per dataset (``--dataset=<name>``)."""
