"""The consumer: `open_consumer` (in `_open`) and the actors it supervises (fetcher, handlers,
completer, lease keeper, listener, sampler, watchdog), which share only `_runtime`."""
