"""KFP v2 components and pipelines of the platform (the folder is kfp/, the package ct_kfp: never shadow the SDK)."""
