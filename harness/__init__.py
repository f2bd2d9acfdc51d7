"""What the tests, the benchmarks and the demo share; none of it is part of the app.

- `servers.py`: the Redis server with the JSON and search modules, started and stopped.
- `lgwriter.py`: conversations written in process through the real LangGraph savers.
- `agents.py`: real LangGraph bots, run as their own process (any saver version's virtualenv).
- `documents.py`: checkpoint documents as RedisSaver stores them, for seeding without LangGraph.
- `reliability/`: the reliability trials: seed a known backlog, disturb the archiver, check.

Neither `tests/` nor `bench/` imports the other: what both need lives here. Like them, it is
left out of the image (.dockerignore).
"""
