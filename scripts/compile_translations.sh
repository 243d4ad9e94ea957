#!/usr/bin/env bash
# Re-extract UI strings, merge them into the ru/en catalogs and compile the .mo files.
#   scripts/compile_translations.sh           extract + update + compile
#   scripts/compile_translations.sh compile   compile only (what a deploy needs)
set -euo pipefail
cd "$(dirname "$0")/.."
PYBABEL="${PYBABEL:-.venv/bin/pybabel}"
DIR=b24app/translations
if [ "${1:-}" != "compile" ]; then
  "$PYBABEL" extract -F "$DIR/babel.cfg" -k _ -k gettext -k lazy_gettext --no-location --sort-output \
    --project b24app --copyright-holder b24app -o "$DIR/messages.pot" . >/dev/null
  for lang in ru en; do
    if [ -f "$DIR/$lang/LC_MESSAGES/messages.po" ]; then
      "$PYBABEL" update -i "$DIR/messages.pot" -d "$DIR" -l "$lang" --no-fuzzy-matching --ignore-obsolete >/dev/null
    else
      "$PYBABEL" init -i "$DIR/messages.pot" -d "$DIR" -l "$lang" >/dev/null
    fi
  done
fi
"$PYBABEL" compile -d "$DIR" --statistics
