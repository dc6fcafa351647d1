"""quorum-ha: read the stack's settings, build the chosen setup, export what other stacks need."""

import pulumi

from components.settings import ConfigError, load_settings
from components.setups import build

try:
    settings = load_settings()
except ConfigError as error:
    # One line naming the key, the value and what is allowed; no traceback.
    raise pulumi.RunError(str(error)) from None

client_node = build(settings)
for name, value in client_node.outputs.items():
    pulumi.export(name, value)
