"""The quorum-ha CrossGuard policy pack: guardrails checked at preview and up."""
