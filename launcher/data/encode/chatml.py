"""The built-in "chatml" chat template: ChatML turns, with tool calling rendered as Qwen2.5 does.

A conversation without tools, tool calls or tool results renders as plain ChatML, one
``<|im_start|>ROLE\\nCONTENT<|im_end|>\\n`` per message. With tools, as Qwen2.5-Instruct's template
(without its default system prompt): the schemas in the system turn inside ``<tools></tools>``,
an assistant's calls as ``<tool_call>\\n{"name": ..., "arguments": ...}\\n</tool_call>`` after its
content, and consecutive tool results in one user turn, each inside
``<tool_response></tool_response>``.
"""

from __future__ import annotations

# Every tag trims the whitespace before it: the layout renders nothing, the text ends at the last
# tag. Jinja unescapes "\n" in its string literals.
CHATML = r"""{%- if tools %}
    {{- '<|im_start|>system\n' }}
    {%- if messages[0]['role'] == 'system' %}
        {{- messages[0]['content'] + '\n\n' }}
    {%- endif %}
    {{- '# Tools\n\nYou may call one or more functions to assist with the user query.\n\n' }}
    {{- 'You are provided with function signatures within <tools></tools> XML tags:\n<tools>' }}
    {%- for tool in tools %}
        {{- '\n' + tool | tojson }}
    {%- endfor %}
    {{- '\n</tools>\n\nFor each function call, return a json object with function name and ' }}
    {{- 'arguments within <tool_call></tool_call> XML tags:\n<tool_call>\n' }}
    {{- '{"name": <function-name>, "arguments": <args-json-object>}\n</tool_call><|im_end|>\n' }}
{%- endif %}
{%- for message in messages %}
    {%- if tools and loop.first and message['role'] == 'system' %}
    {%- elif message['role'] == 'tool' %}
        {%- if loop.first or messages[loop.index0 - 1]['role'] != 'tool' %}
            {{- '<|im_start|>user' }}
        {%- endif %}
        {{- '\n<tool_response>\n' + message['content'] + '\n</tool_response>' }}
        {%- if loop.last or messages[loop.index0 + 1]['role'] != 'tool' %}
            {{- '<|im_end|>\n' }}
        {%- endif %}
    {%- elif message['role'] == 'assistant' and message['tool_calls'] %}
        {{- '<|im_start|>assistant' }}
        {%- if message['content'] %}
            {{- '\n' + message['content'] }}
        {%- endif %}
        {%- for call in message['tool_calls'] %}
            {%- set call = call['function'] if call['function'] is defined else call %}
            {{- '\n<tool_call>\n{"name": "' + call['name'] + '", "arguments": ' }}
            {{- call['arguments'] | tojson + '}\n</tool_call>' }}
        {%- endfor %}
        {{- '<|im_end|>\n' }}
    {%- else %}
        {{- '<|im_start|>' + message['role'] + '\n' + message['content'] + '<|im_end|>\n' }}
    {%- endif %}
{%- endfor %}
{%- if add_generation_prompt %}
    {{- '<|im_start|>assistant\n' }}
{%- endif %}"""
