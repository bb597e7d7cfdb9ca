def handler() -> str:
    return "ok"
