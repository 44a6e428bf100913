"""Events raised by rules, with their actions' results and their lifecycle."""
