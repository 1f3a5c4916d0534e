"""Per-category order pipelines: configuration, data steps and warehouse loading.

Nothing here imports Airflow except ``dag_factory``; the steps run the same in a
worker pod, on a laptop, in a test or in a benchmark.
"""
