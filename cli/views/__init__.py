"""Views: functions `(data, width, color) -> list of renderables` that draw a command's data.

The same view goes to the terminal (coloured only on a terminal without NO_COLOR), into an SVG file
(--svg, coloured) and into a notebook (llmx.show). Views only lay data out; they compute nothing.
"""
