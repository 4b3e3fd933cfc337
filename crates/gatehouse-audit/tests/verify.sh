# Checks an audit log by hand: each record's own hash, then that it links to the one before.
# Usage: bash verify.sh audit.log
log=$1
prev=0000000000000000000000000000000000000000000000000000000000000000
n=0
while IFS= read -r line; do
  n=$((n + 1))
  want=${line: -66:64}                       # the stored hash
  got=$(printf '%s}' "${line%,\"hash\":\"*}" | sha256sum | cut -c1-64)
  [ "$got" = "$want" ] || { echo "line $n: hash mismatch"; exit 1; }
  case $line in
    "{\"seq\":$n,\"prev\":\"$prev\","*) ;;
    *) echo "line $n: seq or prev does not link to line $((n - 1))"; exit 1 ;;
  esac
  prev=$want
done < "$log"
[ -z "$line" ] || { echo "line $((n + 1)): partial last line"; exit 1; }
echo "$n records ok, head $prev"
