"""Sources of model files: hub, s3, http (files or archive), local (uploaded)."""
