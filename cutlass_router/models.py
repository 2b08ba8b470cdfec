"""Router shapes of known MoE models: (experts N, hidden K)."""
MODELS = {
    "gpt-oss-20b": (32, 2880),
    "gpt-oss-120b": (128, 2880),
}


def shape(name: str) -> tuple[int, int]:
    key = name.split("/")[-1].lower()  # accepts "openai/gpt-oss-20b"
    if key not in MODELS:
        raise SystemExit(f"unknown model {name!r}; known: {', '.join(MODELS)} (or pass --experts N --hidden K)")
    return MODELS[key]
