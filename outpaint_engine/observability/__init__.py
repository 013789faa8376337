"""The operator's view of a process: logs (:mod:`.logs`), the metrics and health server
(:mod:`.server`), what an engine reports while it loads and works (:mod:`.stages`), GPU memory
(:mod:`.gpu`) and the container healthcheck (:mod:`.probe`).

Light on purpose (standard library and ``prometheus-client``): the bot imports it without torch.
``docs/operations.md`` lists the metrics, the endpoints and the log format.
"""
