#!/usr/bin/env python3
"""Writes crates/gatehouse-mask/tests/data/corpus.tsv, a seeded known-answer corpus for the
sensitive-data detectors of gatehouse-mask.

The checkers below are written from the detector specification, not from the Rust code. Every
line is verified with them and regenerated until it passes:
  * positive: the value matches its kind, appears exactly once in the text and stands alone;
    scanning the text finds it and nothing else (only findings of the same kind nested inside
    it, such as 212-555-0143 inside 1-212-555-0143, are tolerated); the text with the value cut
    out matches nothing;
  * negative (kind none): scanning the text finds nothing.
Where the specification leaves room, the scanner leans towards finding more than a strict
reading would (IBANs of every ISO country without BBAN format checks, PEM blocks with any body,
'+' and '(' phones whatever precedes them, 1-prefixed NANP numbers with any separator, emails
whose domain is followed by more domain characters), so that no negative and no surrounding
text depends on a borderline reading.

Usage: python3 scripts/mask-corpus.py   (stdlib only, deterministic)
"""
import base64, hashlib, json, os, re, string, sys, uuid
from collections import Counter
from random import Random

R = Random(20261202)
OUT = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))),
                   'crates', 'gatehouse-mask', 'tests', 'data', 'corpus.tsv')
KINDS = ['card', 'ssn', 'iban', 'email', 'phone', 'aws_key', 'jwt', 'pem_key']
DIG, UP = string.digits, string.ascii_uppercase
LETTERS = set(string.ascii_letters)
ALNUM = LETTERS | set(DIG)
B64URL = ALNUM | set('-_')

def rd(n, alphabet=DIG): return ''.join(R.choice(alphabet) for _ in range(n))
def rb(n): return bytes(R.getrandbits(8) for _ in range(n))
def an(t, i): return 0 <= i < len(t) and t[i] in ALNUM
def b64u(b): return base64.urlsafe_b64encode(b).rstrip(b'=').decode()

def table(s):  # 'value | note' entries, separated by newlines or ' || '
    return [tuple(x.strip() for x in e.split(' | ')) for e in re.split(r'\n| \|\| ', s.strip())]

def join_groups(d, lens, seps):
    out, i = [], 0
    for k, n in enumerate(lens):
        out.append((seps[k - 1] if k else '') + d[i:i + n])
        i += n
    return ''.join(out)

# ---------------------------------------------------------------------------------------------
# Rules (the specification)

def luhn(d):
    s = 0
    for i, c in enumerate(reversed(d)):
        v = int(c) * (1 + i % 2)
        s += v - 9 if v > 9 else v
    return s % 10 == 0

def with_luhn(body): return next(body + c for c in DIG if luhn(body + c))

def brands(d):
    n, p = len(d), lambda k: int(d[:k])
    rules = [('visa', d[0] == '4' and n in (13, 16, 19)),
             ('mastercard', (51 <= p(2) <= 55 or 2221 <= p(4) <= 2720) and n == 16),
             ('amex', p(2) in (34, 37) and n == 15),
             ('discover', (p(4) == 6011 or 644 <= p(3) <= 649 or p(2) == 65) and 16 <= n <= 19),
             ('jcb', 3528 <= p(4) <= 3589 and 16 <= n <= 19),
             ('diners', (300 <= p(3) <= 305 or p(2) in (36, 38, 39)) and 14 <= n <= 19),
             ('unionpay', p(2) == 62 and 16 <= n <= 19),
             ('maestro', (p(2) == 50 or 56 <= p(2) <= 58 or d[0] == '6') and 12 <= n <= 19)]
    return [b for b, ok in rules if ok]

def is_card(lens, seps, d):
    layout = (len(lens) == 1 or (all(n == 4 for n in lens[:-1]) and 1 <= lens[-1] <= 4)
              or lens in ([4, 6, 5], [4, 6, 4]))
    return (12 <= len(d) <= 19 and len(set(seps)) <= 1 and set(seps) <= set(' -') and layout
            and luhn(d) and bool(brands(d)))

def is_ssn(parts, seps):
    return ([len(p) for p in parts] == [3, 2, 4] and seps[0] == seps[1] and seps[0] in ' -'
            and parts[0] not in ('000', '666') and parts[0][0] != '9' and parts[1] != '00'
            and parts[2] != '0000')

def nanp(area, exchange): return area[0] in '23456789' and exchange[0] in '23456789'

def is_e164(lens, seps, d):  # the digits of a span directly after '+'
    return 8 <= len(d) <= 15 and d[0] != '0' and all(n >= 2 for n in lens[1:]) \
        and set(seps) <= set(' -')

def is_nanp_lenient(parts, seps):
    lens = [len(p) for p in parts]
    if len(set(seps)) != 1 or seps[0] not in '-. ':
        return False
    if lens == [3, 3, 4]:
        return nanp(parts[0], parts[1])
    return lens == [1, 3, 3, 4] and parts[0] == '1' and nanp(parts[1], parts[2])

# The 16 countries of the specification (strict checks) and the ISO 13616 lengths (lenient scan).
IBAN_FMT = {'DE': '18n', 'GB': '4a14n', 'FR': '10n11c2n', 'ES': '20n', 'IT': '1a10n12c',
            'NL': '4a10n', 'BE': '12n', 'CH': '5n12c', 'AT': '16n', 'PL': '24n', 'SE': '20n',
            'NO': '11n', 'DK': '14n', 'IE': '4a14n', 'PT': '21n', 'SA': '2n18c'}
IBAN_LEN = {cc: int(n) for cc, n in re.findall(r'([A-Z]{2})(\d\d)', """
    AD24 AE23 AL28 AT20 AZ28 BA20 BE16 BG22 BH22 BI27 BR29 BY28 CH21 CR22 CY28 CZ24 DE22 DJ27
    DK18 DO28 EE20 EG29 ES24 FI18 FK18 FO18 FR27 GB22 GE22 GI23 GL18 GR27 GT28 HN28 HR21 HU28
    IE22 IL23 IQ23 IS26 IT27 JO30 KW30 KZ20 LB28 LC32 LI21 LT20 LU20 LV21 LY25 MC27 MD24 ME22
    MK19 MN20 MR27 MT31 MU30 NI28 NL18 NO15 OM23 PK24 PL28 PS29 PT25 QA29 RO24 RS22 RU33 SA24
    SC31 SD18 SE24 SI19 SK24 SM27 SO23 ST25 SV28 TL23 TN24 TR26 UA29 VA22 VG24 XK20 YE30""")}
IBAN_BANKS = {'GB': ['NWBK', 'BARC', 'HBUK', 'LOYD', 'MIDL', 'WEST'], 'IE': ['AIBK', 'BOFI'],
              'NL': ['ABNA', 'INGB', 'RABO', 'TRIO', 'SNSB']}

def mod97(s): return int(''.join(str(int(c, 36)) for c in s[4:] + s[:4])) % 97
def with_mod97(cc, bban): return '%s%02d%s' % (cc, 98 - mod97(cc + '00' + bban), bban)
def bban_fields(cc): return [(int(n), t) for n, t in re.findall(r'(\d+)([nac])', IBAN_FMT[cc])]
def print_form(s): return ' '.join(s[i:i + 4] for i in range(0, len(s), 4))

def bban_re(cc):
    return ''.join('[%s]{%d}' % ({'n': '0-9', 'a': 'A-Z', 'c': 'A-Z0-9'}[t], n)
                   for n, t in bban_fields(cc))

def domain_ok(d):
    labels = d.split('.')
    return (len(labels) >= 2 and all(l and l[0] != '-' and l[-1] != '-' and set(l) <= ALNUM | {'-'}
                                     for l in labels)
            and 2 <= len(labels[-1]) <= 24 and set(labels[-1]) <= LETTERS)

def json_obj(seg):
    if len(seg) % 4 == 1:
        return False
    try:
        return isinstance(json.loads(base64.urlsafe_b64decode(seg + '=' * (-len(seg) % 4))
                                     .decode('utf-8')), dict)
    except ValueError:
        return False

AWS_RE = '(?:AKIA|ASIA|AGPA|AIDA|AROA|ANPA|ANVA|AIPA)[A-Z2-7]{16}'
PEM_LABELS = ['PRIVATE KEY', 'RSA PRIVATE KEY', 'EC PRIVATE KEY', 'OPENSSH PRIVATE KEY',
              'ENCRYPTED PRIVATE KEY', 'DSA PRIVATE KEY']
E164 = re.compile(r'\+[1-9][0-9]*(?:[ -][0-9]{2,})*')
NANP_FORMS = [re.compile(p.replace('N', '[2-9][0-9]{2}')) for p in (
    r'\(N\) N-[0-9]{4}', r'\(N\)N-[0-9]{4}', r'N([-. ])N\1[0-9]{4}', r'1-N-N-[0-9]{4}')]

def check_value(kind, v):
    """Whether v on its own is a value of kind (strict reading of the specification)."""
    if kind == 'card':
        if not re.fullmatch(r'[0-9]+(?:([ -])[0-9]+(?:\1[0-9]+)*)?', v):
            return False
        parts = re.split('[ -]', v)
        return is_card([len(p) for p in parts], re.findall('[ -]', v), ''.join(parts))
    if kind == 'ssn':
        m = re.fullmatch(r'([0-9]{3})([- ])([0-9]{2})\2([0-9]{4})', v)
        return bool(m) and is_ssn([m[1], m[3], m[4]], [m[2], m[2]])
    if kind == 'iban':
        if not re.fullmatch(r'[A-Z0-9]+|(?:[A-Z0-9]{4} )+[A-Z0-9]{1,4}', v):
            return False
        s = v.replace(' ', '')
        return (s[:2] in IBAN_FMT and len(s) == IBAN_LEN[s[:2]] and s[2:4].isdigit()
                and bool(re.fullmatch(bban_re(s[:2]), s[4:])) and mod97(s) == 1)
    if kind == 'email':
        m = re.fullmatch(r'([A-Za-z0-9._%+-]+)@([A-Za-z0-9.-]+)', v)
        return bool(m) and m[1][0] != '.' and m[1][-1] != '.' and domain_ok(m[2])
    if kind == 'phone':
        if E164.fullmatch(v):
            return 8 <= sum(c in DIG for c in v) <= 15
        return any(p.fullmatch(v) for p in NANP_FORMS)
    if kind == 'aws_key':
        return bool(re.fullmatch(AWS_RE, v))
    if kind == 'jwt':
        s = v.split('.')
        return (len(s) == 3 and all(x and set(x) <= B64URL for x in s) and s[0].startswith('eyJ')
                and s[1].startswith('eyJ') and json_obj(s[0]) and len(s[2]) >= 16)
    if kind == 'pem_key':
        m = re.fullmatch(r'-----BEGIN ((?:RSA |EC |OPENSSH |ENCRYPTED |DSA )?PRIVATE KEY)-----\n'
                         r'((?:[A-Za-z0-9+/]{64}\n)*[A-Za-z0-9+/=]{1,64})\n-----END \1-----', v)
        body = m and m[2].replace('\n', '')
        return bool(m) and '=' not in body.rstrip('=') and len(body) % 4 == 0
    raise ValueError(kind)

# ---------------------------------------------------------------------------------------------
# Scanner: every value anywhere in a text, as (kind, start, end)

def digit_tokens(t):
    """Maximal runs of digit groups joined by single ' ', '-' or '.': (groups, separators)."""
    i, n = 0, len(t)
    while i < n:
        if t[i] not in DIG:
            i += 1
            continue
        groups, seps, j = [], [], i
        while True:
            s = j
            while j < n and t[j] in DIG:
                j += 1
            groups.append((s, j))
            if j + 1 < n and t[j] in ' -.' and t[j + 1] in DIG:
                seps.append(t[j])
                j += 1
            else:
                break
        yield groups, seps
        i = j

def scan(t):
    found = set()
    for groups, seps in digit_tokens(t):  # every sub-sequence of groups of every token
        for g in range(len(groups)):
            for e in range(g, min(len(groups), g + 10)):
                s, end = groups[g][0], groups[e][1]
                if an(t, end):
                    continue
                parts = [t[a:b] for a, b in groups[g:e + 1]]
                lens, sp, d = [len(p) for p in parts], seps[g:e], ''.join(parts)
                if t[s - 1:s] == '+' and is_e164(lens, sp, d):
                    found.add(('phone', s - 1, end))
                if an(t, s - 1):
                    continue
                if is_card(lens, sp, d):
                    found.add(('card', s, end))
                if len(parts) == 3 and is_ssn(parts, sp):
                    found.add(('ssn', s, end))
                if len(parts) in (3, 4) and is_nanp_lenient(parts, sp):
                    found.add(('phone', s, end))
    for m in re.finditer(r'\(([0-9]{3})\) ?([0-9]{3})[-. ][0-9]{4}', t):
        if nanp(m[1], m[2]) and not an(t, m.end()):
            found.add(('phone', m.start(), m.end()))
    for m in re.finditer(r'(?=[A-Z]{2}[0-9]{2})', t):
        p = m.start()
        size = IBAN_LEN.get(t[p:p + 2])
        if not size or an(t, p - 1):
            continue
        chars, j = '', p
        while True:  # electronic form, or print form: groups of four, last group 1-4
            k = j
            while k < len(t) and t[k] in ALNUM:
                k += 1
            run = t[j:k]
            if len(chars) + len(run) == size and (j == p or len(run) <= 4):
                s = chars + run
                if re.fullmatch('[A-Z0-9]+', s) and mod97(s) == 1:
                    found.add(('iban', p, k))
                break
            if len(run) != 4 or len(chars) + 4 >= size or t[k:k + 1] != ' ':
                break
            chars, j = chars + run, k + 1
    for a in (i for i, c in enumerate(t) if c == '@'):
        l = a
        while l > 0 and (t[l - 1] in ALNUM or t[l - 1] in '._%+-'):
            l -= 1
        while l < a and t[l] == '.':
            l += 1
        if l == a or t[a - 1] == '.':
            continue
        r = a + 1
        while r < len(t) and (t[r] in ALNUM or t[r] in '.-'):
            r += 1
        for k in range(r, a + 1, -1):  # the longest valid domain
            if t[k - 1] in ALNUM and domain_ok(t[a + 1:k]):
                found.add(('email', l, k))
                break
    for m in re.finditer('(?=%s)' % AWS_RE, t):
        if not an(t, m.start() - 1) and not an(t, m.start() + 20):
            found.add(('aws_key', m.start(), m.start() + 20))

    def seg_end(i):
        while i < len(t) and t[i] in B64URL:
            i += 1
        return i
    for m in re.finditer('eyJ', t):
        p = m.start()
        if p > 0 and t[p - 1] in B64URL:
            continue
        e1 = seg_end(p)
        if t[e1:e1 + 1] != '.' or not t.startswith('eyJ', e1 + 1):
            continue
        e2 = seg_end(e1 + 1)
        if t[e2:e2 + 1] != '.':
            continue
        e3 = seg_end(e2 + 1)
        if e3 - e2 - 1 >= 16 and json_obj(t[p:e1]):
            found.add(('jwt', p, e3))
    for m in re.finditer('-----BEGIN ', t):
        q = t.find('-----', m.end())
        label = t[m.end():q] if q > 0 else ''
        if label.endswith('PRIVATE KEY') and '\n' not in label:
            end = '-----END %s-----' % label
            k = t.find(end, q + 5)
            if k >= 0:
                found.add(('pem_key', m.start(), k + len(end)))
    return found

def verify_pos(kind, text, value):
    if not check_value(kind, value) or text.count(value) != 1:
        return False
    s0 = text.index(value)
    e0 = s0 + len(value)
    if an(text, s0 - 1) or an(text, e0):
        return False
    if kind == 'jwt' and (text[s0 - 1:s0] in B64URL or text[e0:e0 + 1] in ('.', '=')):
        return False
    found = scan(text)
    if (kind, s0, e0) not in found:
        return False
    if any(not (k == kind and s0 <= s and e <= e0) for k, s, e in found):
        return False
    return not scan(text[:s0] + ' ' + text[e0:])

# ---------------------------------------------------------------------------------------------
# Surrounding text

NAMES = ['Jane Doe', 'John Smith', 'Maria Garcia', 'Wei Chen', 'Olga Ivanova', 'Ahmed Khan',
         'Priya Patel', 'Lukas Müller', 'Sofia Rossi', 'Kenji Tanaka', "Aoife O'Brien", 'José Silva']
CITIES = ['Berlin', 'London', 'Zürich', 'Madrid', 'Oslo', 'São Paulo', 'Toronto', 'Riyadh']
KEYS = {'card': ['card_number', 'pan', 'cc', 'credit_card'], 'ssn': ['ssn', 'tax_id', 'social'],
        'iban': ['iban', 'account', 'payout_iban'], 'email': ['email', 'contact', 'reply_to'],
        'phone': ['phone', 'mobile', 'contact_number'], 'aws_key': ['aws_access_key_id', 'access_key'],
        'jwt': ['token', 'id_token', 'authorization'], 'pem_key': ['key']}
TEMPLATES = [
    ('log line', '{ts} INFO  [{svc}] lookup {k}={v} user_id={id}'),
    ('log line', '{ts} WARN gatehouse::audit: row {id} returned {k} "{v}"'),
    ('SQL', "INSERT INTO customers (id, name, {k}) VALUES ({id}, '{name}', '{v}');"),
    ('SQL', "UPDATE accounts SET {k} = '{v}' WHERE id = {id};"),
    ('SQL', "SELECT id FROM payments WHERE {k} = '{v}' LIMIT 1;"),
    ('JSON', '{{"id": {id}, "{k}": "{v}", "verified": true}}'),
    ('JSON', '{{"customer":{{"name":"{name}","{k}":"{v}"}}}}'),
    ('sentence', 'Please update the {k} on file to {v} before Friday.'),
    ('sentence', 'My {k} is {v}.'),
    ('sentence', '{name} ({v}) asked us to close the account'),
    ('CSV row', '{id},{name},{v},{date}'),
    ('CSV row', '"{name}";"{v}";"{city}"'),
    ('HTML', '<td class="{k}">{v}</td>'),
    ('YAML', '{k}: {v}'),
]
JWT_TEMPLATES = [
    ('HTTP header', 'Authorization: Bearer {v}'),
    ('JSON', '{{"access_token":"{v}","token_type":"Bearer","expires_in":3600}}'),
    ('HTTP header', 'Set-Cookie: session={v}; Path=/; HttpOnly'),
    ('log line', '{ts} DEBUG auth: verifying token {v} for user {id}'),
]
PEM_TEMPLATES = [
    ('file listing', '$ cat ~/.ssh/id_key\n{v}\n$ ls -l'),
    ('env file', 'APP_ENV=production\nSIGNING_KEY="{v}"\nLOG_LEVEL=info'),
    ('log line', '{ts} ERROR [{svc}] secret found in config: {v}'),
    ('TOML', 'name = "billing"\nkey = """\n{v}\n"""'),
    ('SQL', "UPDATE tenants SET signing_key = '{v}' WHERE id = {id};"),
]

def ts():
    return '2026-%02d-%02dT%02d:%02d:%02dZ' % (R.randint(1, 12), R.randint(1, 28), R.randint(0, 23),
                                               R.randint(0, 59), R.randint(0, 59))

def embed(kind, v, note):
    if kind == 'pem_key':
        ctx, tpl = R.choice(PEM_TEMPLATES)
    elif kind == 'jwt':
        ctx, tpl = R.choice([t for t in TEMPLATES if '{v}.' not in t[1]] + JWT_TEMPLATES)
    else:
        ctx, tpl = R.choice(TEMPLATES)
    text = tpl.format(v=v, k=R.choice(KEYS[kind]), ts=ts(), id=R.randint(2, 99999),
                      svc=R.choice(['api', 'billing', 'etl', 'crm']), name=R.choice(NAMES),
                      date=ts()[:10], city=R.choice(CITIES))
    return text, '%s; in %s' % (note, ctx)

# ---------------------------------------------------------------------------------------------
# Cards

CARD_BRANDS = [
    ('visa', lambda: '4', (13, 16, 16, 16, 19)),
    ('mastercard', lambda: R.choice(['51', '52', '53', '54', '55', str(R.randint(2221, 2720))]), (16,)),
    ('amex', lambda: R.choice(['34', '37']), (15,)),
    ('discover', lambda: R.choice(['6011', str(R.randint(644, 649)), '65']), (16, 16, 17, 18, 19)),
    ('jcb', lambda: str(R.randint(3528, 3589)), (16, 16, 17, 18, 19)),
    ('diners', lambda: R.choice(['300', '301', '302', '303', '304', '305', '36', '38', '39']),
     (14, 14, 14, 15, 16, 17, 18, 19)),
    ('unionpay', lambda: '62', (16, 16, 17, 18, 19)),
    ('maestro', lambda: R.choice(['50', '56', '57', '58', '6' + R.choice(DIG)]), tuple(range(12, 20))),
]
TEST_CARDS = ['4111111111111111', '5555555555554444', '378282246310005', '6011111111111117',
              '3530111333300000', '30569309025904', '4012888888881881', '4222222222222',
              '5105105105105100', '371449635398431', '6011000990139424', '3566002020360505',
              '38520000023237', '2223003122003222', '6200000000000005', '5200828282828210',
              '4000056655665556', '36227206271667', '6759649826438453']

def card_lens(n, layout):
    if layout in ('4-6-5', '4-6-4'):
        return [4, 6, n - 10]
    return [n] if layout == 'contiguous' else [4] * (n // 4) + ([n % 4] if n % 4 else [])

def card_layout(d, layout=None, sep=None):
    n = len(d)
    layout = layout or R.choice(['contiguous', 'fours'] + ['4-6-5'] * 2 * (n == 15)
                                + ['4-6-4'] * 2 * (n == 14))
    sep = sep or R.choice(' -')
    lens = card_lens(n, layout)
    if len(lens) == 1:
        return d, 'contiguous'
    return join_groups(d, lens, sep * 5), '-'.join(map(str, lens)) + ' ' + \
        ('space' if sep == ' ' else 'hyphen')

def random_card(brand=None):
    name, prefix, lengths = brand or R.choice(CARD_BRANDS)
    n = R.choice(lengths)
    pre = prefix()
    return name, with_luhn(pre + rd(n - len(pre) - 1))

def make_card(i):
    name, d = random_card(CARD_BRANDS[i % len(CARD_BRANDS)])
    v, lay = card_layout(d)
    return v, '%s %d digits, %s' % (name, len(d), lay)

def fixed_cards():
    out = []
    for d in TEST_CARDS:
        assert luhn(d) and brands(d), d
        std, name = {15: '4-6-5', 14: '4-6-4'}.get(len(d), 'fours'), brands(d)[0]
        forms = [(d, 'contiguous'), card_layout(d, std, ' '), card_layout(d, std, '-')]
        out += [(v, v, 'test number %s, %s' % (name, lay)) for v, lay in forms]
        v, lay = forms[1]
        text, note = embed('card', v, 'test number %s, %s' % (name, lay))
        out.append((text, v, note))
    return out

def neg_card():
    r = R.random()
    if r < 0.25:
        name, d = random_card()
        k = R.randrange(len(d))
        d = d[:k] + R.choice(DIG.replace(d[k], '')) + d[k + 1:]
        v, lay = card_layout(d)
        return v, 'card look-alike: %s with one digit changed, Luhn fails, %s' % (name, lay)
    if r < 0.4:
        n = R.randint(12, 19)
        d = with_luhn(R.choice('01789') + rd(n - 2))
        v, lay = card_layout(d)
        return v, 'card look-alike: Luhn-valid %d digits starting with %s, no brand, %s' % (n, d[0], lay)
    if r < 0.6:
        name, pre, n = R.choice([('visa', '4', 15)] * 3 + [('visa', '4', 14), ('visa', '4', 17), ('visa', '4', 18)]
                                + [('mastercard', R.choice(['51', '53', '55', '2221', '2720']), 17)] * 3
                                + [('mastercard', '54', 15), ('amex', R.choice(['34', '37']), 16)] * 3
                                + [('amex', '37', 14), ('amex', '34', 17)])
        d = with_luhn(pre + rd(n - len(pre) - 1))
        v, lay = card_layout(d)
        return v, 'card look-alike: Luhn-valid %s prefix at %d digits (wrong length), %s' % (name, n, lay)
    if r < 0.72:
        name, d = random_card()
        layout = R.choice(['fours'] + ['4-6-5'] * (len(d) == 15) + ['4-6-4'] * (len(d) == 14))
        a, b = R.choice([(' ', '-'), ('-', ' ')])
        return join_groups(d, card_lens(len(d), layout), (a + b) * 3), \
            'card look-alike: valid %s with mixed separators' % name
    if r < 0.86:
        name, d = random_card()
        x = rd(R.randint(1, 3))
        v = x + d if R.random() < 0.5 else d + x
        return v, 'card look-alike: valid %s inside a %d-digit run' % (name, len(v))
    name, d = random_card()
    v, lay = card_layout(d, R.choice(['contiguous', 'contiguous', 'fours']))
    c = R.choice(string.ascii_letters)
    side = R.choice(['before', 'after'])
    return (c + v if side == 'before' else v + c), \
        'card look-alike: valid %s with a letter directly %s, %s' % (name, side, lay)

CARD_NEG = [('4111 1111-1111 1111', 'mixed separators'), ('x4111111111111111', 'letter before'),
            ('4111111111111111x', 'letter after'), ('94111111111111111', 'inside a longer run'),
            ('41111111111111110', 'inside a longer run'), ('4111111111111112', 'Luhn fails'),
            ('4111 1111 1111 1112', 'Luhn fails'), ('5555555555554445', 'Luhn fails'),
            ('1111111111111117', 'no brand'), ('card4111 1111 1111 1111', 'letter before')]

# ---------------------------------------------------------------------------------------------
# SSNs, IBANs, emails

def ssn_area():
    while True:
        a = R.randint(1, 899)
        if a != 666:
            return '%03d' % a

def ssn_join(a, g, s, sep): return a + sep + g + sep + s
def ssn_group(): return '%02d' % R.randint(1, 99)
def ssn_serial(): return '%04d' % R.randint(1, 9999)

def make_ssn(i):
    sep = ' ' if i % 4 == 3 else '-'
    return ssn_join(ssn_area(), ssn_group(), ssn_serial(), sep), \
        'ssn, ' + ('spaces' if sep == ' ' else 'hyphens')

def neg_ssn():
    a, g, s, sep = ssn_area(), ssn_group(), ssn_serial(), R.choice('--- ')
    r = R.random()
    if r < 0.3:
        a = R.choice(['000', '666', str(R.randint(900, 999))])
        return ssn_join(a, g, s, sep), 'ssn look-alike: area %s' % a
    if r < 0.4:
        return ssn_join(a, '00', s, sep), 'ssn look-alike: group 00'
    if r < 0.5:
        return ssn_join(a, g, '0000', sep), 'ssn look-alike: serial 0000'
    if r < 0.6:
        return a + g + s, 'ssn look-alike: contiguous 9 digits'
    if r < 0.7:
        c = R.choice('/.')
        return ssn_join(a, g, s, c), "ssn look-alike: '%s' separators" % c
    if r < 0.77:
        return a + '-' + g + ' ' + s if R.random() < 0.5 else a + ' ' + g + '-' + s, \
            'ssn look-alike: mixed separators'
    if r < 0.87:
        v = ssn_join(a, g, s, sep)
        return (rd(1) + v if R.random() < 0.5 else v + rd(1)), 'ssn look-alike: inside a longer digit run'
    if r < 0.94:
        v, c = ssn_join(a, g, s, sep), R.choice(string.ascii_letters)
        return (c + v if R.random() < 0.5 else v + c), 'ssn look-alike: letter attached'
    d = a + g + s
    return R.choice(['%s-%s-%s' % (d[:2], d[2:5], d[5:]), '%s-%s-%s' % (d[:4], d[4:6], d[6:]),
                     '%s-%s-%s' % (d[:3], d[3:6], d[6:])]), 'ssn look-alike: wrong group lengths'

IBAN_EXAMPLES = ['DE89370400440532013000', 'GB29NWBK60161331926819', 'GB82WEST12345698765432',
                 'FR1420041010050500013M02606', 'ES9121000418450200051332',
                 'IT60X0542811101000000123456', 'NL91ABNA0417164300', 'BE68539007547034',
                 'CH9300762011623852957', 'AT611904300234573201', 'PL61109010140000071219812874',
                 'SE4550000000058398257466', 'NO9386011117947', 'DK5000400440116243',
                 'IE29AIBK93115212345678', 'PT50000201231234567890154', 'SA0380000000608010167519']

def bban(cc):
    out = ''
    for n, t in bban_fields(cc):
        if t == 'a' and n == 4 and cc in IBAN_BANKS:
            out += R.choice(IBAN_BANKS[cc])
        elif t in 'an':
            out += rd(n, UP if t == 'a' else DIG)
        else:
            f = rd(n)
            for _ in range(R.choice([0, 0, 0, 1, 2])):
                k = R.randrange(n)
                f = f[:k] + R.choice(UP) + f[k + 1:]
            out += f
    return out

def iban_form(s, print_=None):
    print_ = R.random() < 0.5 if print_ is None else print_
    return (print_form(s), 'print form') if print_ else (s, 'electronic form')

def make_iban(i):
    cc = list(IBAN_FMT)[i % len(IBAN_FMT)]
    v, form = iban_form(with_mod97(cc, bban(cc)))
    return v, 'iban %s %d, %s' % (cc, IBAN_LEN[cc], form)

def neg_iban():
    cc = R.choice(list(IBAN_FMT))
    s, r = with_mod97(cc, bban(cc)), R.random()
    if r < 0.3:
        bad = R.choice([c for c in ('%02d' % k for k in range(100)) if c != s[2:4]])
        v, form = iban_form(s[:2] + bad + s[4:])
        return v, 'iban look-alike: %s with wrong check digits, %s' % (cc, form)
    if r < 0.5:
        b = s[4:]
        k = R.randrange(len(b))
        b = b[:k] + b[k + 1:] if R.random() < 0.5 else b[:k] + R.choice(DIG) + b[k:]
        v, form = iban_form(with_mod97(cc, b))
        return v, 'iban look-alike: %s at %d characters (wrong length, mod-97 valid), %s' % (cc, len(b) + 4, form)
    if r < 0.7:
        x = R.choice(['XX', 'ZZ'])
        v, form = iban_form(with_mod97(x, bban(cc)))
        return v, 'iban look-alike: unknown country %s, mod-97 valid, %s' % (x, form)
    if r < 0.87:
        v, form = iban_form(s)
        return v.lower(), 'iban look-alike: valid %s in lowercase, %s' % (cc, form)
    how = R.choice(['groups of five', 'groups of three', 'hyphens', 'groups of four, then the rest run together'])
    if how.endswith('together'):
        k = 4 * R.randint(1, (len(s) - 6) // 4)
        return print_form(s[:k]) + ' ' + s[k:], 'iban look-alike: valid %s in %s' % (cc, how)
    n = {'groups of five': 5, 'groups of three': 3}.get(how, 4)
    sep = '-' if how == 'hyphens' else ' '
    return sep.join(s[i:i + n] for i in range(0, len(s), n)), 'iban look-alike: valid %s in %s' % (cc, how)

FIRST = ['jane', 'john', 'maria', 'wei', 'olga', 'ahmed', 'li', 'sam', 'priya', 'lukas', 'sofia',
         'noah', 'emma', 'ana', 'kenji', 'fatima']
LAST = ['doe', 'smith', 'garcia', 'chen', 'ivanova', 'khan', 'nguyen', 'patel', 'muller', 'rossi',
        'silva', 'kowalski', 'tanaka', 'obrien']
DOMAINS = ['example.com', 'example.org', 'example.net', 'mail.example.co.uk', 'corp.example.de',
           'acme-widgets.io', 'dept.uni-example.edu', 'example.travelersinsurance', 'gatehouse.dev',
           'shop.example.international', 'mx1.mail-2.example.fr', 'xn--bcher-kva.example.ch',
           'example.technology', 'sub.example.photography', 'a1.example.jp', 'b2b.example.se']
TLDS = ['com', 'org', 'net', 'io', 'de', 'fr', 'co.uk', 'dev', 'info', 'app', 'cloud', 'museum',
        'ch', 'nl', 'se', 'com.au', 'solutions']

def email_local():
    f, l = R.choice(FIRST), R.choice(LAST)
    v = R.choice(['%s.%s' % (f, l), '%s_%s' % (f, l), '%s%s%d' % (f[0], l, R.randint(1, 99)),
                  '%s+%s' % (f, R.choice(['news', 'billing', 'test', 'x'])), '%s.%s%%dept' % (f, l),
                  '%s-%s' % (f, l), f, '%s.%s' % (f[0], l), '%s%d' % (l, R.randint(1000, 9999)),
                  R.choice('xyzq')])
    return v.title() if R.random() < 0.1 else v

def email_domain():
    if R.random() < 0.5:
        return R.choice(DOMAINS)
    label = rd(R.randint(1, 4), 'abcdefghijklmnopqrstuvwxyz') + R.choice(['', '-', '1', 'mail'])
    label += rd(R.randint(1, 6), 'abcdefghijklmnopqrstuvwxyz0123456789')
    return label + '.' + R.choice(TLDS)

def make_email(i):
    d = email_domain()
    return email_local() + '@' + (d.upper() if R.random() < 0.05 else d), 'email, domain %s' % d

EMAIL_NEG = table("""
user@localhost | no dot in the domain || admin@localhost:8080 | no dot in the domain
@example.com | empty local part || user@.com | empty domain label
name at example dot com | spelled out || a@b | one-label domain || @property | decorator
git@github | one-label domain || git@github:org/repo | one-label domain
user.@example.com | local part ends with a dot || user@example.c | one-letter TLD
user@example.123 | numeric TLD || user@-example.com | label starts with a hyphen
user@example-.com | label ends with a hyphen || user@@example.com | two @
user@example..com | empty label || jane@[192.168.0.1] | address literal
root@10.0.0.1 | IPv4 domain || @media (max-width: 600px) | CSS at-rule || @Override | annotation
jane.doe@example_mail.com | underscore ends the domain after one label""")

def neg_email():
    f, d = email_local(), email_domain()
    base, tld = d.rsplit('.', 1)
    v, why = R.choice([(f + '@' + base.replace('.', '-'), 'one label'), ('@' + d, 'empty local part'),
                       (f + '@.' + tld, 'empty label'),
                       ('%s at %s dot %s' % (f, base, tld), 'spelled out'), (f + '.@' + d, 'local part ends with a dot'),
                       (f + '@' + base + '.' + tld[0], 'one-letter TLD'), (f + '@-' + d, 'label starts with -'),
                       (f + '@' + base + '-.' + tld, 'label ends with -'),
                       (f + '@' + base + '.' + rd(3), 'numeric TLD'),
                       ('@' + R.choice(['dataclass', 'staticmethod', 'Autowired', 'keyframes', 'import']), 'decorator'),
                       ('@' + f.replace('.', '_'), 'handle')])
    return v, 'email look-alike: ' + why

# ---------------------------------------------------------------------------------------------
# Phones, AWS keys, JWTs, PEM keys

E164_CC = [('1', 10)] * 3 + [('44', 10), ('49', 11), ('49', 10), ('33', 9), ('34', 9), ('39', 10),
           ('31', 9), ('61', 9), ('81', 10), ('86', 11), ('91', 10), ('55', 11), ('7', 10), ('353', 9),
           ('41', 9), ('46', 9), ('47', 8), ('45', 8), ('358', 9), ('971', 9), ('65', 8), ('852', 8),
           ('27', 9), ('52', 10), ('90', 10), ('48', 9), ('351', 9), ('43', 12), ('32', 9), ('420', 9),
           ('30', 10), ('64', 9), ('82', 10), ('882', 12)]

def nanp_digits():
    a, x = R.choice('23456789') + rd(2), R.choice('23456789') + rd(2)
    if R.random() < 0.3:
        x, line = '555', '01' + rd(2)
    else:
        line = rd(4)
    return a, x, line

def split_national(n):
    parts = []
    while n > 4 or (n == 4 and R.random() < 0.5):
        g = R.randint(2, min(4, n - 2))
        parts.append(g)
        n -= g
    return parts + [n]

def make_e164():
    cc, n = R.choice(E164_CC)
    nat = ''.join(nanp_digits()) if cc == '1' else R.choice('123456789') + rd(n - 1)
    lay = R.choice(['contiguous', 'contiguous', 'country code apart', 'groups', 'groups', 'groups', 'pairs'])
    sep = R.choice('   -')
    if lay == 'contiguous':
        return '+' + cc + nat, 'phone E.164 +%s, contiguous' % cc
    if lay == 'country code apart':
        lens = [n]
    elif lay == 'pairs':
        lens = [2] * (n // 2 - 1) + [2 + n % 2]
    else:
        lens = [3, 3, 4] if cc == '1' else split_national(n)
    return '+' + cc + sep + join_groups(nat, lens, sep * 20), 'phone E.164 +%s, %s, %s' % (
        cc, lay, 'spaces' if sep == ' ' else 'hyphens')

NANP_LAYOUTS = ['({a}) {x}-{l}', '({a}){x}-{l}', '{a}-{x}-{l}', '{a}.{x}.{l}', '{a} {x} {l}', '1-{a}-{x}-{l}']

def make_phone(i):
    if i % 5 < 3:
        return make_e164()
    a, x, l = nanp_digits()
    form = NANP_LAYOUTS[i % len(NANP_LAYOUTS)]
    return form.format(a=a, x=x, l=l), 'phone NANP ' + form.format(a='NXX', x='NXX', l='XXXX')

PHONE_FIXED = ['(212) 555-0143', '(212)555-0143', '212-555-0143', '212.555.0143', '212 555 0143',
               '1-212-555-0143', '+44 20 7946 0958', '+1 212 555 0143', '+14155552671', '+49 30 901820',
               '+81 90 1234 5678', '+353 87 123 4567', '+61 412 345 678', '+44 7911 123456',
               '+86 138 0013 8000', '+91 98765 43210', '+1-212-555-0143', '+4930901820',
               '+49 30 12 34 56 78 90', '+882 16 12 34 56 78 90', '+7 91 23 45 67 89 01']
PHONE_FIXED_TEXT = [('Call us (212-555-0143) today', '212-555-0143'),
                    ('fax (646.555.0199) or mail', '646.555.0199'),
                    ('support line (312 555 0177), weekdays', '312 555 0177'),
                    ('call +14155552671 now', '+14155552671')]
PHONE_NEG = table("""
2026-12-01 | date || 12/01/2026 | date || 12:30:45 | time
2026-12-01T09:23:35Z | ISO timestamp || 192.168.1.254 | IPv4 address
10.0.0.1:5432 | IPv4 address and port || 1.2.3 | version || 1,234,567.89 | amount
2125550143 | contiguous 10 digits without + || 012-555-0143 | area code starts with 0
112-555-0143 | area code starts with 1 || (012) 555-0143 | area code starts with 0
212-055-0143 | exchange starts with 0 || +0 20 7946 0958 | +0 || +44 20 79 | 6 digits after +
+1 555 014 | 7 digits after + || 212-555-0143X | letter after || x212-555-0143 | letter before
212-555.0143 | mixed separators || 212 555-0143 | mixed separators
+44.20.7946.0958 | E.164 with dots || +33 1 23 45 67 89 | E.164 with a one-digit group
+61 2 9876 5432 | E.164 with a one-digit group || 555-0143 | 7-digit local number
+4420794609581234 | 16 digits after + || (212) 555-01434 | line number of five digits""")

def neg_phone():
    a, x, l = nanp_digits()
    r = R.random()
    if r < 0.2:
        y, m, d = R.randint(1990, 2030), R.randint(1, 12), R.randint(1, 28)
        return R.choice(['%d-%02d-%02d' % (y, m, d), '%02d/%02d/%d' % (m, d, y), '%02d.%02d.%d' % (d, m, y),
                         '%d-%02d-%02dT%02d:%02d:%02dZ' % (y, m, d, R.randint(0, 23), R.randint(0, 59), R.randint(0, 59)),
                         '%02d:%02d:%02d' % (R.randint(0, 23), R.randint(0, 59), R.randint(0, 59))]), \
            'phone look-alike: date or time'
    if r < 0.3:
        return '.'.join(str(R.randint(0, 255)) for _ in range(4)) + R.choice(['', ':5432', ':8080']), \
            'phone look-alike: IPv4 address'
    if r < 0.38:
        return R.choice(['%d.%d.%d' % (R.randint(0, 20), R.randint(0, 40), R.randint(0, 99)),
                         '%s,%03d,%03d.%02d' % (R.randint(1, 999), R.randint(0, 999), R.randint(0, 999), R.randint(0, 99))]), \
            'phone look-alike: version or amount'
    if r < 0.48:
        return a + x + l, 'phone look-alike: contiguous 10 digits without +'
    if r < 0.6:
        bad = R.choice('01')
        form = R.choice(NANP_LAYOUTS)
        if R.random() < 0.5:
            return form.format(a=bad + a[1:], x=x, l=l), 'phone look-alike: area code starts with ' + bad
        return form.format(a=a, x=bad + x[1:], l=l), 'phone look-alike: exchange starts with ' + bad
    if r < 0.66:
        return '+0' + R.choice(['', ' ']) + rd(R.randint(8, 11)), 'phone look-alike: +0'
    if r < 0.72:
        return '+' + R.choice('123456789') + rd(R.randint(2, 6)), 'phone look-alike: fewer than 8 digits after +'
    if r < 0.76:
        return '+' + R.choice('123456789') + rd(R.randint(15, 18)), 'phone look-alike: more than 15 contiguous digits'
    if r < 0.84:
        c, v = R.choice(string.ascii_letters), R.choice(NANP_LAYOUTS[2:5]).format(a=a, x=x, l=l)
        return (c + v if R.random() < 0.5 else v + c), 'phone look-alike: letter attached'
    if r < 0.9:
        s1, s2 = R.sample(['-', '.', ' '], 2)
        return a + s1 + x + s2 + l, 'phone look-alike: mixed separators'
    if r < 0.95:
        return '+%s %s %s %s %s %s' % (R.choice(['33', '61', '32']), R.choice('123456789'), rd(2), rd(2), rd(2), rd(2)), \
            'phone look-alike: E.164 with a one-digit group'
    return '+%s.%s.%s' % (R.choice(['44', '49', '31']), rd(3), rd(4)), 'phone look-alike: E.164 with dots'

AWS_PREFIXES = ['AKIA', 'ASIA', 'AGPA', 'AIDA', 'AROA', 'ANPA', 'ANVA', 'AIPA']
AWS32 = UP + '234567'

def make_aws(i):
    p = AWS_PREFIXES[i % len(AWS_PREFIXES)]
    return p + rd(16, AWS32), 'aws key, prefix ' + p

def neg_aws():
    p, r = R.choice(AWS_PREFIXES), R.random()
    if r < 0.2:
        return (p + rd(16, AWS32)).lower(), 'aws look-alike: lowercase'
    if r < 0.4:
        return p + rd(15, AWS32), 'aws look-alike: 15 characters after the prefix'
    if r < 0.6:
        return p + rd(17, AWS32), 'aws look-alike: 17 characters after the prefix'
    if r < 0.8:
        k = rd(16, AWS32)
        i = R.randrange(16)
        return p + k[:i] + R.choice('0189') + k[i + 1:], "aws look-alike: '0', '1', '8' or '9' in the key"
    q = R.choice(['ABCD', 'AKIB', 'AKID', 'AXIA', 'BKIA', 'ASIB', 'AAAA'])
    return q + rd(16, AWS32), 'aws look-alike: prefix ' + q

JWT_HEADERS = [{'alg': 'HS256', 'typ': 'JWT'}, {'alg': 'RS256', 'typ': 'JWT', 'kid': ''},
               {'typ': 'JWT', 'alg': 'ES256'}, {'alg': 'HS512', 'typ': 'JWT'}, {'alg': 'PS256', 'kid': ''},
               {'alg': 'EdDSA', 'typ': 'JWT'}]
SIG_BYTES = {'HS256': 32, 'HS512': 64, 'RS256': 256, 'PS256': 256, 'ES256': 64, 'EdDSA': 64}
JWT_IO = ('eyJhbGciOiJIUzI1NiIsInR5cCI6IkpXVCJ9.eyJzdWIiOiIxMjM0NTY3ODkwIiwibmFtZSI6IkpvaG4gRG9lIiwi'
          'aWF0IjoxNTE2MjM5MDIyfQ.SflKxwRJSMeKKF2QT4fwpMeJf36POk6yJV_adQssw5c')

def jwt_parts():
    h = dict(R.choice(JWT_HEADERS))
    if 'kid' in h:
        h['kid'] = rd(16, '0123456789abcdef')
    iat = R.randint(1700000000, 1800000000)
    claims = [('sub', R.choice([str(uuid.UUID(int=R.getrandbits(128), version=4)), str(R.randint(1, 10 ** 9))])),
              ('iat', iat), ('exp', iat + R.choice([300, 3600, 86400]))]
    claims += R.sample([('name', R.choice(NAMES)), ('iss', 'https://auth.example.com'), ('aud', 'gatehouse'),
                        ('scope', 'read write'), ('roles', ['analyst']), ('email_verified', True),
                        ('jti', rd(12, '0123456789abcdef')), ('tenant', R.randint(1, 500))], R.randint(0, 4))
    R.shuffle(claims)
    seps = R.choice([(',', ':'), (', ', ': ')])
    head = b64u(json.dumps(h, separators=seps).encode())
    body = b64u(json.dumps(dict(claims), separators=seps, ensure_ascii=False).encode())
    return h['alg'], head, body, b64u(rb(SIG_BYTES[h['alg']]))

def make_jwt(i):
    alg, h, p, s = jwt_parts()
    return '%s.%s.%s' % (h, p, s), 'jwt %s' % alg

def neg_jwt():
    alg, h, p, s = jwt_parts()
    r = R.random()
    if r < 0.2:
        return h + '.' + p + R.choice(['', '.']), 'jwt look-alike: two segments only'
    if r < 0.4:
        return '%s.%s.%s' % (h[:R.randint(6, len(h) - 2)], p[:R.randint(6, len(p))], s), \
            'jwt look-alike: first segment is not base64url JSON (truncated)'
    if r < 0.55:
        bad = R.choice(['{"alg":"%s",}' % alg, '{"alg":"%s"' % alg, '{"alg":%s}' % alg])
        return '%s.%s.%s' % (b64u(bad.encode()), p, s), 'jwt look-alike: header is invalid JSON'
    if r < 0.7:
        return '%s.%s.%s' % (h, p, s[:R.randint(4, 15)]), 'jwt look-alike: signature shorter than 16'
    if r < 0.85:
        return R.choice(string.ascii_letters + DIG + '-_') + '%s.%s.%s' % (h, p, s), \
            'jwt look-alike: preceded by a base64url character'
    return '%s.%s.%s' % (h, b64u(R.choice([b'not json', b'[1,2,3]', b'"sub"'])), s), \
        'jwt look-alike: second segment does not start with eyJ'

def der(label):
    if label == 'EC PRIVATE KEY':
        return b'\x30\x77\x02\x01\x01\x04\x20' + rb(112)
    if label == 'OPENSSH PRIVATE KEY':
        return b'openssh-key-v1\x00' + rb(R.randint(180, 420))
    if label == 'PRIVATE KEY' and R.random() < 0.4:
        return b'\x30\x2e\x02\x01\x00\x30\x05\x06\x03\x2b\x65\x70\x04\x22\x04\x20' + rb(32)
    n = R.randint(300, 1200)
    return b'\x30\x82' + n.to_bytes(2, 'big') + rb(n)

def pem(label, data=None):
    body = base64.b64encode(data or der(label)).decode()
    lines = [body[i:i + 64] for i in range(0, len(body), 64)]
    return '-----BEGIN %s-----\n%s\n-----END %s-----' % (label, '\n'.join(lines), label)

def make_pem(i):
    label = PEM_LABELS[i % len(PEM_LABELS)]
    return pem(label), 'pem ' + label

def neg_pem():
    r = R.random()
    if r < 0.35:
        label = R.choice(['CERTIFICATE', 'PUBLIC KEY', 'RSA PUBLIC KEY', 'CERTIFICATE REQUEST', 'X509 CRL'])
        return pem(label, rb(R.randint(100, 700))), 'pem look-alike: %s block' % label
    if r < 0.55:
        v = pem(R.choice(PEM_LABELS))
        return v[:v.rindex('\n')], 'pem look-alike: BEGIN without END line'
    if r < 0.7:
        a, b = R.sample(PEM_LABELS, 2)
        v = pem(a)
        return v[:v.rindex('\n')] + '\n-----END %s-----' % b, 'pem look-alike: END label does not match'
    if r < 0.8:
        v = pem('PGP PRIVATE KEY BLOCK', rb(R.randint(200, 600)))
        return v, 'pem look-alike: PGP PRIVATE KEY BLOCK (label does not end in PRIVATE KEY)'
    if r < 0.9:
        return pem(R.choice(PEM_LABELS)).replace('-----', '----'), 'pem look-alike: four dashes'
    return R.choice(['Paste the BEGIN PRIVATE KEY block into the form.',
                     'The file starts with BEGIN %s and ends with END %s.' % ((R.choice(PEM_LABELS),) * 2),
                     'never commit BEGIN RSA PRIVATE KEY material (ticket %d)' % R.randint(100, 9999)]), \
        'pem look-alike: BEGIN PRIVATE KEY in prose'

# ---------------------------------------------------------------------------------------------
# General negatives

def isbn13():
    d = R.choice(['978', '979']) + rd(9)
    d += str((10 - sum(int(c) * (1 + 2 * (i % 2)) for i, c in enumerate(d)) % 10) % 10)
    g = R.randint(1, 2)
    p = R.randint(2, 5)
    return '-'.join([d[:3], d[3:3 + g], d[3 + g:3 + g + p], d[3 + g + p:12], d[12]])

def general():
    i, n = R.randint(1, 99999), R.randint
    u = str(uuid.UUID(int=R.getrandbits(128), version=4))
    h = hashlib.sha256(rb(16)).hexdigest()
    b64 = base64.b64encode(rb(n(12, 90))).decode()
    y, mo, d, hh, mi, ss = 2026, n(1, 12), n(1, 28), n(0, 23), n(0, 59), n(0, 59)
    options = [
        ('uuid', R.choice([u, 'request_id=' + u, 'trace %s started' % u, u.upper()])),
        ('sha-256 digest', R.choice([h, 'sha256:' + h, '%s  gatehouse-1.%d.%d.tar.gz' % (h, n(0, 9), n(0, 9))])),
        ('timestamp', R.choice(['%d-%02d-%02dT%02d:%02d:%02dZ' % (y, mo, d, hh, mi, ss),
                                '%d-%02d-%02dT%02d:%02d:%02d.%03d+01:00' % (y, mo, d, hh, mi, ss, n(0, 999)),
                                '%d-%02d-%02d %02d:%02d:%02d' % (y, mo, d, hh, mi, ss),
                                'Tue, %02d Dec %d %02d:%02d:%02d +0000' % (d, y, hh, mi, ss),
                                '[%02d/Dec/%d:%02d:%02d:%02d +0000]' % (d, y, hh, mi, ss),
                                str(n(1700000000, 1800000000)), str(n(1700000000000, 1799999999999)),
                                '%d%02d%02dT%02d%02d%02dZ' % (y, mo, d, hh, mi, ss),
                                '%02d/%02d/%d %d:%02d PM' % (mo, d, y, n(1, 12), mi)])),
        ('order or invoice number', R.choice(['ORD-%08d' % n(0, 99999999), 'INV-%d-%06d' % (n(2019, 2026), n(0, 999999)),
                                              'PO-%d-%s' % (n(10000, 99999), rd(2, UP)), 'order #%d shipped' % n(100000, 9999999)])),
        ('tracking number', R.choice(['1Z' + rd(6, UP + DIG) + rd(10), '9400 %s %s %s %s %s' % (rd(4), rd(4), rd(4), rd(4), rd(2)),
                                      'FedEx 7%s' % rd(11), 'tracking: JD%s' % rd(16)])),
        ('SQL', R.choice(["SELECT id, status FROM orders WHERE created_at >= '%d-%02d-%02d' LIMIT %d;" % (y, mo, d, n(1, 500)),
                          'UPDATE sessions SET last_seen = now() WHERE id = %d;' % i,
                          "DELETE FROM carts WHERE updated_at < now() - interval '%d days';" % n(1, 90),
                          'CREATE INDEX idx_orders_customer_%d ON orders (customer_id);' % n(1, 99),
                          "INSERT INTO audit_log (actor, action) VALUES ('svc-etl', 'export-%d');" % i,
                          'SELECT count(*) FROM payments GROUP BY currency HAVING count(*) > %d;' % n(1, 9999)])),
        ('log line', R.choice(['%d-%02d-%02dT%02d:%02d:%02dZ INFO http: GET /api/v1/orders/%d 200 %dms' % (y, mo, d, hh, mi, ss, i, n(1, 999)),
                               '%d-%02d-%02dT%02d:%02d:%02dZ ERROR pool: connection to 10.0.%d.%d:5432 refused (attempt %d/5)' % (y, mo, d, hh, mi, ss, n(0, 255), n(1, 254), n(1, 5)),
                               'level=info msg="checkpoint complete" lsn=0/%s duration=%d.%03ds' % (rd(8, '0123456789ABCDEF'), n(0, 9), n(0, 999)),
                               '127.0.0.1 - - [%02d/Dec/%d:%02d:%02d:%02d +0000] "POST /login HTTP/1.1" 302 %d' % (d, y, hh, mi, ss, n(100, 9999))])),
        ('price', R.choice(['$%d,%03d.%02d' % (n(1, 99), n(0, 999), n(0, 99)), 'EUR %d,%02d' % (n(1, 999), n(0, 99)),
                            'total: %d.%02d USD' % (n(1, 99999), n(0, 99)), 'price=%d.99' % n(1, 999)])),
        ('ISBN-13', R.choice(['ISBN ', '', 'isbn: ']) + isbn13()),
        ('semantic version', R.choice(['%d.%d.%d' % (n(0, 9), n(0, 40), n(0, 99)), 'v%d.%d.%d-rc.%d' % (n(0, 9), n(0, 40), n(0, 9), n(1, 5)),
                                       'gatehouse %d.%d.%d+build.%d' % (n(0, 3), n(0, 30), n(0, 9), n(1, 999))])),
        ('port', R.choice(['localhost:%d' % n(1024, 65535), '0.0.0.0:%d' % n(1, 65535), 'listen %d;' % n(1, 65535),
                           'postgres://db.internal:%d/app' % n(1024, 65535)])),
        ('base64 blob', R.choice([b64, 'data: ' + b64])),
        ('short digit groups', R.choice([' '.join(rd(2) for _ in range(n(2, 5))), '-'.join(rd(2) for _ in range(n(2, 4))),
                                         'table %d, row %d, col %d' % (n(1, 99), n(1, 9999), n(1, 99)), '%d %d %d' % (n(1, 9), n(1, 9), n(1, 9))])),
        ('misc', R.choice(['C:\\Program Files\\Gatehouse\\v%d\\gatehouse.exe' % n(1, 9), 'id\tname\tstatus\n%d\tJane\tactive' % i,
                           '2001:db8::%x' % n(1, 65535), '%02x:%02x:%02x:%02x:%02x:%02x' % tuple(n(0, 255) for _ in range(6)),
                           '#%06x' % n(0, 0xffffff), 'https://example.com/docs?page=%d&lang=en' % n(1, 99),
                           '**** **** **** %04d' % n(0, 9999), 'card ending in %04d' % n(0, 9999),
                           'line one\nline %d' % i, 'ext. %d' % n(100, 9999)])),
    ]
    label, text = options[R.randrange(len(options))]
    return text, 'general: ' + label

GENERAL_FIXED = table("""
978-3-16-148410-0 | ISBN-13 || 12 34 56 | short digit groups || ORD-00012345 | order number
INV-2026-000123 | invoice number || 2.14.0 | semantic version || 2026-12-01 09:23:35 | timestamp
SELECT 1; | SQL || localhost:5432 | port""")

# ---------------------------------------------------------------------------------------------
# Assembly

LINES, SEEN, REJECTED = [], set(), Counter()

def add_positives(kind, n, fixed, make):
    start = len(LINES)
    for text, value, note in fixed:
        if (kind, text) in SEEN or not verify_pos(kind, text, value):
            sys.exit('fixed %s line fails: %r' % (kind, text))
        LINES.append((kind, text, value, note))
        SEEN.add((kind, text))
    i = 0
    while len(LINES) - start < n:
        for _ in range(2000):
            value, note = make(i)
            text, note2 = embed(kind, value, note) if (len(LINES) - start) % 3 == 2 else (value, note)
            if (kind, text) not in SEEN and verify_pos(kind, text, value):
                break
            REJECTED[kind] += 1
        else:
            sys.exit('cannot generate ' + kind)
        LINES.append((kind, text, value, note2))
        SEEN.add((kind, text))
        i += 1

def add_negatives(n, fixed, make, kind=None):
    start = len(LINES)
    for text, note in fixed:
        note = '%s look-alike: %s' % (kind.replace('_key', ''), note) if kind else 'general: ' + note
        if ('none', text) in SEEN or scan(text):
            sys.exit('fixed negative fails: %r %r' % (text, scan(text)))
        LINES.append(('none', text, '', note))
        SEEN.add(('none', text))
    while len(LINES) - start < n:
        for _ in range(2000):
            text, note = make()
            if kind and R.random() < 1 / 3:
                text, note = embed(kind, text, note)
            if ('none', text) not in SEEN and not scan(text):
                break
            REJECTED['none'] += 1
        else:
            sys.exit('cannot generate negative ' + (kind or 'general'))
        LINES.append(('none', text, '', note))
        SEEN.add(('none', text))

def one(v, note): return (v, v, note)

def main():
    add_positives('card', 480, fixed_cards(), make_card)
    add_negatives(200, CARD_NEG, neg_card, 'card')
    add_positives('ssn', 180, [one(v, 'ssn, edge or sample') for v in ['078-05-1120', '123-45-6789', '219-09-9999',
                               '001-01-0001', '899-99-9999', '665-01-0001', '667-99-9999', '123 45 6789']]
                  + [('ssn=123-45-6789;', '123-45-6789', 'ssn, hyphens; in key=value')], make_ssn)
    add_negatives(100, table("""
000-12-3456 | area 000 || 666-12-3456 | area 666 || 900-12-3456 | area 900
123-00-4567 | group 00 || 123-45-0000 | serial 0000 || 123456789 | contiguous 9 digits
123/45/6789 | '/' separators || 123.45.6789 | '.' separators
1123-45-6789 | inside a longer digit run || 123-45-67890 | inside a longer digit run"""),
                  neg_ssn, 'ssn')
    ibans = []
    for s in IBAN_EXAMPLES:
        ibans += [one(s, 'iban %s example, electronic form' % s[:2]), one(print_form(s), 'iban %s example, print form' % s[:2])]
    ibans += [('iban DE89 3704 0044 0532 0130 00 ok', 'DE89 3704 0044 0532 0130 00', 'iban DE example, print form; in text'),
              ('iban:GB29NWBK60161331926819', 'GB29NWBK60161331926819', 'iban GB example, electronic form; in text')]
    add_positives('iban', 240, ibans, make_iban)
    add_negatives(110, table("""
DE88370400440532013000 | wrong check digits || DE8937040044053201300 | 21 characters
XX89370400440532013000 | unknown country XX || ZZ29NWBK60161331926819 | unknown country ZZ
de89370400440532013000 | lowercase || gb29 nwbk 6016 1331 9268 19 | lowercase, print form"""),
                  neg_iban, 'iban')
    add_positives('email', 220, [one(v, 'email, edge or sample') for v in [
        'jane.doe+x@mail.example.co.uk', 'a@b.co', 'x_y%z@sub-domain.example.org', 'ops@example.abcdefghijklmnopqrstuvwx',
        'first.last@example.com', 'user-name@example-host.com', '12345@example.com']]
        + [('to: jane.doe+x@mail.example.co.uk.', 'jane.doe+x@mail.example.co.uk', 'email; in sentence'),
           ('From: Jane Doe <jane@example.org>', 'jane@example.org', 'email; in mail header'),
           ('mailto:billing@example.net?subject=invoice', 'billing@example.net', 'email; in mailto link')], make_email)
    add_negatives(70, EMAIL_NEG, neg_email, 'email')
    add_positives('phone', 240, [one(v, 'phone, sample') for v in PHONE_FIXED]
                  + [(t, v, 'phone, sample; in sentence') for t, v in PHONE_FIXED_TEXT], make_phone)
    add_negatives(140, PHONE_NEG, neg_phone, 'phone')
    add_positives('aws_key', 100, [one('AKIAIOSFODNN7EXAMPLE', 'aws key, AWS documentation example'),
                  ('key AKIAIOSFODNN7EXAMPLE end', 'AKIAIOSFODNN7EXAMPLE', 'aws key; in text'),
                  ('AWS_ACCESS_KEY_ID=AKIAIOSFODNN7EXAMPLE', 'AKIAIOSFODNN7EXAMPLE', 'aws key; in env file')], make_aws)
    add_negatives(50, table("""
AKIAIOSFODNN7EXAMPLEX | 17 characters after the prefix || akiaiosfodnn7example | lowercase
AKIAIOSFODNN7EXAMPL | 15 characters after the prefix || AKIAIOSFODNN0EXAMPLE | '0' in the key
ABCDIOSFODNN7EXAMPLE | prefix ABCD || xAKIAIOSFODNN7EXAMPLE | letter before"""),
                  neg_aws, 'aws_key')
    add_positives('jwt', 100, [one(JWT_IO, 'jwt HS256, jwt.io example'),
                  ('Authorization: Bearer ' + JWT_IO, JWT_IO, 'jwt HS256, jwt.io example; in HTTP header')], make_jwt)
    add_negatives(50, table("""
eyJhbGciOi.eyJzdWIiOiIx.abcdefghijklmnopq | first segment is not base64url JSON
api.example.com | domain name || cdn.example.com/assets/app.min.js | URL path
v1.22.3 | dotted version || eyJournal.example.com | domain name starting with eyJ"""), neg_jwt, 'jwt')
    add_positives('pem_key', 90, [], make_pem)
    add_negatives(40, [], neg_pem, 'pem_key')
    add_negatives(340, GENERAL_FIXED, general)

    esc = lambda s: s.replace('\\', '\\\\').replace('\t', '\\t').replace('\n', '\\n')
    os.makedirs(os.path.dirname(OUT), exist_ok=True)
    with open(OUT, 'w', encoding='utf-8', newline='\n') as f:
        f.write('# Known-answer corpus for the gatehouse-mask detectors. Generated by\n'
                '# scripts/mask-corpus.py (seed 20261202); regenerate rather than edit.\n'
                '# Each line: kind<TAB>text<TAB>value<TAB>note\n'
                '#   kind   card, ssn, iban, email, phone, aws_key, jwt, pem_key, or none\n'
                '#   text   the input; a positive contains exactly one sensitive value, a none line\n'
                '#          matches no detector\n'
                '#   value  the sensitive value exactly as it appears in text (empty for none)\n'
                '#   note   short description\n'
                '# In every field a backslash, tab and newline are written \\\\, \\t and \\n.\n'
                '# Lines starting with # are comments.\n')
        for fields in LINES:
            assert '\r' not in ''.join(fields) and fields[1]
            f.write('\t'.join(map(esc, fields)) + '\n')

    # Read the file back and check every line again.
    unesc = lambda s: re.sub(r'\\(.)', lambda m: {'\\': '\\', 't': '\t', 'n': '\n'}[m[1]], s)
    counts, back = Counter(), []
    with open(OUT, encoding='utf-8') as f:
        for line in f:
            if line.startswith('#'):
                continue
            kind, text, value, note = map(unesc, line.rstrip('\n').split('\t'))
            assert kind in KINDS + ['none'] and note
            assert (verify_pos(kind, text, value) if kind != 'none' else value == '' and not scan(text)), line
            counts[kind] += 1
            back.append((kind, text, value, note))
    assert back == LINES
    pos = sum(counts[k] for k in KINDS)
    embedded = Counter(k for k, t, v, _ in LINES if k != 'none' and t != v)
    for k in KINDS:
        print('%-8s %5d  (%d in surrounding text)' % (k, counts[k], embedded[k]))
    print('%-8s %5d  (%d general)' % ('none', counts['none'], sum(n.startswith('general') for *_, n in LINES)))
    print('positives %d, negatives %d, lines %d; regenerated %s' % (pos, counts['none'], len(LINES), dict(REJECTED)))
    notes = [n for k, _, _, n in LINES if k == 'card']
    print('card brands:', dict(Counter(n.split()[0] if not n.startswith('test') else n.split()[2].rstrip(',') for n in notes)))
    print('card layouts:', dict(Counter(n.split(';')[0].split(', ')[-1] for n in notes)))
    print('wrote', os.path.relpath(OUT))

if __name__ == '__main__':
    main()
