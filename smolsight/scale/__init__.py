"""Scaling out: batch jobs over many pictures and clips (`batch`), run in this process or on a
Ray cluster with Ray Data (`data`), and the OpenAI-compatible server as Ray Serve replicas
(`serving`). Ray is an optional extra (`pip install 'smolsight[ray]'`); `cluster` connects to
it. Imports engine, serve and evals; only the CLI imports it."""
