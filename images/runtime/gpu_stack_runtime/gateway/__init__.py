"""What the gateway image (LiteLLM's proxy) runs of this package: its key check."""
