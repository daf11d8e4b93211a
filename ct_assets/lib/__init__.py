"""Plain functions shared by the Dagster assets, the Spark jobs and the KFP components."""
