"""thoraxmae: Ray-distributed studies that find and explain MAE/ViT training recipes for chest X-rays.

One installable namespace over four packages, each a top-level folder of the repository:

    thoraxmae.datasets   sources -> prepared store -> transforms and loaders      (folder datasets/)
    thoraxmae.trainers   MAE pre-training and fine-tuning as Ray Train workers    (folder trainers/)
    thoraxmae.study      typed study spec, Tune + Optuna + ASHA, MLflow tracking  (folder study/)
    thoraxmae.analysis   MLflow runs -> tables, importance, recipe, report        (folder analysis/)

Imports flow one way: datasets <- trainers <- study <- analysis (analysis never imports Ray).
`thoraxmae.cli` is the composition root: the one `thoraxmae` command and its error boundary.
See docs/architecture.md.
"""
__version__ = "0.2.0"
