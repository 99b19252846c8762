"""Device kernels of schurfast (imported as ``schurfast.kernels``)."""
