"""Facts about quorum-ha's world that the program and the policy pack both rely on."""
