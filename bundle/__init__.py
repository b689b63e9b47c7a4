"""Deploy bundles: one exported file, its manifest and the self-checking scripts of bundle_template/."""
