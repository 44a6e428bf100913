"""The plant's machines as the hub acts on them: the `stop_machine` action's outbox and its call."""
