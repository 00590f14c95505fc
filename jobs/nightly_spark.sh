#!/usr/bin/env bash
# The nightly offers job on a Spark cluster: every customer of the lake's transactions scored with the registered
# champions (timing, discount, credit), written as parquet partitioned by the discount level.
#
# Once per release, build the Python environment the executors run (same offerlab, torch, pandas as the driver):
#   python -m venv env && env/bin/pip install 'offerlab[pyspark]' venv-pack && env/bin/venv-pack -o offerlab_env.tar.gz
# Schedule this script (Airflow, cron, a Databricks job running jobs/score_spark.py) once a day. Models: the
# driver resolves champion to its version, downloads it from the MLflow server and ships it to the executors
# (executors need no MLflow access). YARN here; Kubernetes or standalone: change --master and the env options.
set -euo pipefail
DAY=${DAY:-$(date -u +%F)}
LAKE=${LAKE:-s3a://marketplace-lake}
export MLFLOW_TRACKING_URI=${MLFLOW_TRACKING_URI:-http://mlflow.internal:5000}

spark-submit \
  --master yarn --deploy-mode cluster --name "offerlab-offers-$DAY" \
  --archives offerlab_env.tar.gz#environment \
  --conf spark.pyspark.python=./environment/bin/python \
  --conf spark.yarn.appMasterEnv.MLFLOW_TRACKING_URI="$MLFLOW_TRACKING_URI" \
  --conf spark.sql.session.timeZone=UTC \
  --conf spark.executor.memoryOverhead=6g \
  --num-executors 16 --executor-cores 4 --executor-memory 8g --driver-memory 8g \
  jobs/score_spark.py offers \
    --input "$LAKE/transactions/" --customers "$LAKE/customers/" --applications "$LAKE/applications/" \
    --output "$LAKE/offers/day=$DAY" --alias champion --chunk-size 50000 --partition-by discount_level --force
