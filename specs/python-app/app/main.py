import markupsafe
import six

print(markupsafe.escape("<a>"), "six", six.__version__)
