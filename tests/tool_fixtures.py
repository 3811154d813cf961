"""Tool definitions shared by the tool-format tests."""

# short city names: a tiny random model under the grammar finishes a call quickly
WEATHER = {
    "type": "function",
    "function": {
        "name": "get_weather",
        "parameters": {
            "type": "object",
            "properties": {"city": {"type": "string", "maxLength": 12}},
            "required": ["city"],
        },
    },
}
