"""Responses stage: results/items/{dataset}.parquet + raw responses -> results/responses/{dataset}.parquet (model_id,
item_id, correct 0/1; a missing response is an absent row), .dropped.csv, .stats.json; also results/leaderboard/{dataset}.*
and results/simulated/{dataset}/*. CLI subcommands: simulate-leaderboard, collect-leaderboard, import-responses."""
