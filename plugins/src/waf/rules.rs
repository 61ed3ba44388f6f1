//! Fenfa's own detection rules: one table of regular expressions, each with an id, a class, the
//! paranoia level from which it is on, and the inputs it applies to.
//!
//! The table is compiled once per plugin instance into one [`RegexSet`] per input scope (values,
//! headers, path), keeping only the rules of the configured paranoia level, so one value costs
//! one pass of one automaton whatever the number of rules (the set's own literal prefilter skips
//! most benign values without entering the automaton).
//!
//! The rules cover what libinjection does not (traversal, command injection, remote file
//! inclusion, protocol abuse) and back it up for SQL injection and XSS where it is known to be
//! blind (keywords hidden by comments, JavaScript URLs, event handlers in fragments). They are
//! written for attack *classes* — a separator followed by a shell command, a climb out of a
//! directory, a URL with a scheme only exploits use — never for a particular payload string.
//! Paranoia 1 is tuned for the city app's traffic (Chinese text, IDs, WeChat signatures, JWTs,
//! rich-text HTML, English prose); higher levels add rules that also catch rarer forms and will
//! need exclusions on free-text fields.

use regex::bytes::RegexSet;

/// What kind of attack a detection is. The string forms are metric labels and audit values.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Class {
    Sqli,
    Xss,
    PathTraversal,
    CommandInjection,
    Rfi,
    Protocol,
}

impl Class {
    pub const ALL: [Class; 6] = [
        Class::Sqli,
        Class::Xss,
        Class::PathTraversal,
        Class::CommandInjection,
        Class::Rfi,
        Class::Protocol,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            Class::Sqli => "sqli",
            Class::Xss => "xss",
            Class::PathTraversal => "path_traversal",
            Class::CommandInjection => "command_injection",
            Class::Rfi => "rfi",
            Class::Protocol => "protocol",
        }
    }

    pub fn from_name(name: &str) -> Option<Class> {
        Class::ALL.into_iter().find(|c| c.as_str() == name)
    }
}

/// Where a rule applies.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Scope {
    /// Query, form, JSON, multipart and cookie values (and names/keys).
    Value,
    /// Inspected request headers (not cookies).
    Header,
    /// The request path.
    Path,
}

const V: u8 = 1;
const H: u8 = 2;
const P: u8 = 4;

/// One rule: id (stable, used in findings and exclusions), class, paranoia level, scopes
/// (bit set of `V`, `H`, `P`), pattern (always case-insensitive).
struct Rule {
    id: &'static str,
    class: Class,
    paranoia: u8,
    scopes: u8,
    pattern: &'static str,
}

const fn r(
    id: &'static str,
    class: Class,
    paranoia: u8,
    scopes: u8,
    pattern: &'static str,
) -> Rule {
    Rule {
        id,
        class,
        paranoia,
        scopes,
        pattern,
    }
}

/// The rule table. Order matters only for which rule is reported when several match one value:
/// the first in this table.
const RULES: &[Rule] = &[
    // XML external entities: a declaration that pulls in a file or URL.
    r(
        "rfi-xxe",
        Class::Rfi,
        1,
        V,
        r"<!entity\s+(?:%\s*)?[\w.-]+\s+(?:system|public)\b|<!doctype\s+[\w.-]+\s+(?:system|public)\s+['\x22][a-z]+:",
    ),
    // --- command injection -------------------------------------------------------------------
    // A shell separator, then a command (`; id`, `| uname -a`, `&& sleep 5`, `` `whoami` ``).
    r(
        "cmdi-separator",
        Class::CommandInjection,
        1,
        V | H | P,
        CMD_AFTER_SEPARATOR,
    ),
    // A lone `&` (or a quote and `&`) opening the value, then a command: the value was meant to
    // end a shell argument (`& ping -n 30 127.0.0.1 &`, `' & whoami`).
    r(
        "cmdi-leading-ampersand",
        Class::CommandInjection,
        1,
        V | H,
        r"^\s*['\x22]?\s*&\s*(?:/usr/bin/|/bin/)?(?:id|whoami|uname|cat|ls|pwd|wget|curl|nc|ncat|bash|sh|ping|nslookup|ipconfig|ifconfig|netstat|netsh|sleep|echo|dir|type|net|reg|perl|python[23]?|ruby|php|powershell|cmd|systeminfo|tasklist|route|arp|hostname)(?:\s*$|\s*[;|&'\x22]|\s+[-/\\%$'\x22\w])|['\x22]\s*(?:&|&&|\|\|?)\s*(?:whoami|uname|ifconfig|ipconfig|netstat|ping\s+-|sleep\s+\d|curl|wget)\b|^\s*['\x22]\s+(?:whoami|uname\s+-\w|ifconfig|ipconfig|netstat)\b",
    ),
    // A newline, then a command that is no English word, alone or with an option.
    r(
        "cmdi-newline",
        Class::CommandInjection,
        1,
        V | H,
        r"(?:[\r\n]|\\[nr])\s*(?:/?usr/bin/|/bin/|/usr/sbin/|/sbin/)?(?:id|whoami|uname|wget|curl|nc|ncat|bash|sh|python[23]?|perl|ping|nslookup|ifconfig|ipconfig|netstat|powershell|cmd|systeminfo|cat\s+/|ls\s+-\w+|echo\s+\w+|curl\s|wget\s)(?:\s*$|\s+-|\s*[;|&]|\\[nr])",
    ),
    // Command substitution and shell variables that only shells read.
    r(
        "cmdi-substitution",
        Class::CommandInjection,
        1,
        V | H | P,
        r"\$\(\s*[a-z/]|\$\{(?:ifs|path|home|shell|ps\d)\}|\$ifs\b|`\s*(?:/?[\w.-]+/)*(?:id|whoami|uname|cat|ls|pwd|wget|curl|nc|bash|sh|ping|sleep|echo|nslookup|ifconfig|ipconfig|netstat|hostname|ps|env|printenv|dir|type|perl|python[23]?|php|ruby)\b[^`]*`|\$\{[a-z_]+:?[-=+?]|\$\[\s*\d",
    ),
    // Shellshock.
    r(
        "cmdi-shellshock",
        Class::CommandInjection,
        1,
        V | H | P,
        r"\(\s*\)\s*\{[^}]*;\s*\}\s*;",
    ),
    // A command with a path (`/bin/sh`, `/usr/bin/id`, `c:\windows\system32\cmd.exe`).
    r(
        "cmdi-binary-path",
        Class::CommandInjection,
        1,
        V | H,
        r"(?:^|[\s;|&`'(\x22])(?:/usr/local|/usr)?/s?bin/(?:\w+)|\\(?:system32|syswow64)\\\w+\.exe|\bcmd(?:\.exe)?\s+/[ck]\b|\bpowershell(?:\.exe)?\s+-|%(?:systemroot|windir|comspec|programfiles|userprofile|temp)%",
    ),
    // A recon command with the arguments it comes with, as the whole value (`netstat -an`,
    // `uname -a`, `ls -l /var/www/*`, `nc -lvvp 4444 -e /bin/sh`).
    r(
        "cmdi-bare-command",
        Class::CommandInjection,
        1,
        V,
        r"^\s*(?:netstat(?:\s+-\w+)?|ipconfig(?:\s+/\w+)?|ifconfig(?:\s+-?\w+)?|whoami(?:\s+/\w+)?|systeminfo|sysinfo|uname\s+-\w+|ls\s+-\w+(?:\s+\S+)?|which\s+\w+|cat\s+/\S+|nc\s+-\w+.*|ncat\s+.*|perl\s+-e\s.*|python[23]?\s+-c\s.*|ruby\s+-e\s.*|php\s+-r\s.*|bash\s+-[ci]\s.*|sh\s+-c\s.*|wget\s+\S+|curl\s+-?\S+.*|ping\s+-[nc]\s+\d+.*|sleep\s+\d+|type\s+(?:[a-z]:|%)\S*|net\s+(?:user|localgroup|view|share|use)\b.*|reg\s+(?:add|query|delete)\s.*|tasklist(?:\s.*)?|netsh\s+\w+.*|dir\s+(?:[a-z]:|/[a-z]|\\).*)\s*[;|&]*\s*$",
    ),
    // Code execution in interpreted languages: `system("…")`, `eval('…')`, `<?php`, SSI.
    r(
        "cmdi-code-exec",
        Class::CommandInjection,
        1,
        V | H,
        r"<\?(?:php|=)|<!--\s*#\s*(?:exec|include|echo|config|fsize|flastmod|printenv)\b|\b(?:system|exec|shell_exec|passthru|popen|proc_open|pcntl_exec|assert|eval|create_function|call_user_func|preg_replace|include|require|include_once|require_once|file_get_contents|fopen|readfile)\s*\(\s*['\x22$`]|\bphpinfo\s*\(\s*\)|\b(?:runtime\.getruntime|processbuilder)\s*\(|\b__import__\s*\(|\$\{\s*@?\w+\s*\(|\{\$\{|\{\s*\$_(?:get|post|request|cookie|server|env)\b|\$_(?:get|post|request|cookie|server|env)\s*\[|\bphp(?:info|version|credits|_uname)\s*\(|\b(?:base64_decode|gzinflate|gzuncompress|str_rot13|shell_exec|passthru|proc_open|pcntl_exec|file_put_contents|call_user_func(?:_array)?|create_function|assert|eval)\((?:\s*[\w$'\x22(])|\bos\.(?:system|popen)\s*\(|\bsubprocess\.\w+\s*\(",
    ),
    // Template injection that leads to code execution (`{{7*7}}`, `${7*7}`, `<%= 7*7 %>`).
    r(
        "cmdi-template",
        Class::CommandInjection,
        1,
        V | H,
        r"\{\{\s*\d+\s*[-+*/]\s*\d+\s*\}\}|\$\{\s*\d+\s*[-+*/]\s*\d+\s*\}|<%=?\s*\d+\s*[-+*/]\s*\d+\s*%>|#\{\s*\d+\s*[-+*/]\s*\d+\s*\}|\{\{[^}]*(?:__class__|__globals__|__builtins__|__subclasses__|config\.items|self\._|request\.application|lipsum|cycler|joiner)[^}]*\}\}|\$\{\s*(?:jndi|env|sys|java|lower|upper|script|spring)[:.]|\{%-?\s*(?:for|if|set|import|include|extends|block|macro|raw|load|debug|with|print)\b[^%]*%\}",
    ),
    // PowerShell and cmd.exe constructs (`IEX(New-Object Net.WebClient).DownloadString(…)`,
    // `-EncodedCommand`, `for /f`, `if exist`).
    r(
        "cmdi-windows",
        Class::CommandInjection,
        1,
        V | H,
        r"\b(?:invoke-(?:expression|webrequest|command|restmethod|item|wmimethod)|new-object\s+(?:-\w+\s+)?(?:system\.)?net\.webclient|downloadstring\s*\(|downloadfile\s*\(|start-process|set-executionpolicy|get-(?:childitem|content|process|wmiobject|ciminstance)\s|add-type\s+-)\b|\biex\s*\(|(?:^|\s)-(?:enc|encodedcommand|e)\s+[a-z0-9+/]{20,}={0,2}|\bfor\s+/[fdlr]\s|\bif\s+(?:not\s+)?exist\s",
    ),
    // Server-side code in other runtimes: Node's child_process, Java's Runtime and serialized
    // objects, Spring's class loader, PHP object injection, prototype pollution.
    r(
        "cmdi-runtime",
        Class::CommandInjection,
        1,
        V | H,
        r"\brequire\s*\(\s*['\x22`]child_process|\bchild_process\b|\bprocess\s*\.\s*(?:mainmodule|binding|dlopen)\b|\bjava\.lang\.(?:runtime|processbuilder|reflect|class|system)\b|(?-i:\brO0AB)|\baced0005|\bclass\.(?:module\.)?classloader\b|^\s*[oca]:\d+:\x22[\w\\]+\x22:\d+:\{|__proto__|\bconstructor\s*(?:\.\s*prototype|\[\s*['\x22]prototype)",
    ),
    // Paranoia 2: a lone `&` as separator, and English command words after a separator.
    r(
        "cmdi-separator-loose",
        Class::CommandInjection,
        2,
        V,
        r"(?:^|[^&])&\s*(?:id|whoami|uname|cat|ls|pwd|wget|curl|nc|bash|sh|ping|nslookup|ipconfig|ifconfig|netstat|sleep|echo|dir|type|net)\b",
    ),
    // --- path traversal ---------------------------------------------------------------------
    // A climb out of a directory: `../`, `..\`, `/..`, also with the odd separators lenient
    // servers accept (an undecodable byte, IIS's %uEFC8/%uF025, full-width slash).
    r(
        "pt-dotdot",
        Class::PathTraversal,
        1,
        V | H | P,
        r"(?:\.{2,}(?:[/\\;]|\xEF\xBF\xBD)+[^/\\]{0,3}){2}|(?:^|[/\\=:])\.{2,}(?:[/\\]|\xEF\xBF\xBD)+[a-z0-9_.~$%-]+(?:[/\\]|\.[a-z0-9]{1,5}\b)|[/\\]\.{2,}(?:$|(?:[/\\;?]|\xEF\xBF\xBD))|\.{2,}[/\\]+(?:etc|proc|windows|winnt|boot\.ini|usr|var|root)\b|\.{2,}[\x00-\x1f]",
    ),
    r(
        "pt-hex-dots",
        Class::PathTraversal,
        1,
        V | H | P,
        r"0x2e0x2e|\.\.(?:0x|%)?(?:2f|5c)|(?:0x|%)(?:2f|5c)\.\.|0x2e\.|\.0x2e|(?:(?:\.\?|\?\.|\?\?)(?:[/\\]|0x2f|0x5c|%)){2}|(?:\.\?|\?\.|\?\?)(?:[/\\]|0x2f|0x5c)+(?:etc|windows|boot\.ini)",
    ),
    // Mixed dot-slash runs (`/./\/./`, `/.\/\.\`) that some servers fold into a climb.
    r(
        "pt-dot-slash",
        Class::PathTraversal,
        1,
        V | P,
        r"[/\\]\.\\|\\\.[/\\]|(?:[/\\]\.){3,}[/\\]",
    ),
    // `../` sequences in base64 (`Li4vLi4v`), for parameters the application decodes.
    r(
        "pt-base64",
        Class::PathTraversal,
        1,
        V,
        r"Li4vLi4v|Li4uXC4u|Li5cLi5c",
    ),
    // Leftovers of an undecodable overlong sequence next to dots (`%c0.%c0.`, `%c1%8s`).
    r(
        "pt-overlong",
        Class::PathTraversal,
        1,
        V | H | P,
        r"%c[01](?:%|\.)|\.%c[01]|%(?:e0|f0|f8|fc)%80",
    ),
    // Files an attacker reads or includes once outside the web root.
    r(
        "pt-sensitive-file",
        Class::PathTraversal,
        1,
        V | H | P,
        r"(?:^|[/\\:])(?:etc[/\\]+(?:passwd|shadow|group|gshadow|hosts|issue|motd|hostname|resolv\.conf|crontab|fstab|sudoers|inittab|profile|bashrc|environment|network|sysconfig|apache2?|httpd|nginx|mysql|php\d*|ssh|ftp|proftpd?|vsftpd|samba|security|init\.d|rc\.d|master\.passwd|[\w.-]*\.(?:conf|cnf|cfg|ini))|proc[/\\]+(?:self|\d+|version|cmdline|mounts|net|cpuinfo|meminfo|sched_debug|environ|partitions|stat|kcore|loadavg|modules)|(?:sys|dev)[/\\]+(?:class|block|net|tcp|udp|stdin|fd)\b|var[/\\]+(?:log|lib|run|mail|spool|www|adm|db|apache)\b|usr[/\\]+local[/\\]|root[/\\]|boot\.ini|win\.ini|system\.ini|(?:windows|winnt)[/\\]|system32[/\\]|inetpub[/\\]|xampp[/\\]|wamp[/\\]|program\sfiles|php\.ini|my\.(?:cnf|ini)|httpd\.conf|web\.config|\.htaccess|\.htpasswd|\.env\b|\.git[/\\]|\.svn[/\\]|\.ssh[/\\]|id_[rd]sa|\.bash_history|\.aws[/\\]|\.(?:passwd|shadow|bashrc|bash_profile|bash_logout|profile|rhosts|shosts|xauthority|logout|login|netrc|cshrc|tcshrc|zshrc|forward|pgpass|mysql_history|psql_history|viminfo|lesshst|npmrc|dockercfg|gitconfig|kube[/\\]config)\b|wp-config\.php|(?:web|meta)-inf[/\\]|\.ds_store\b|\.(?:idea|vscode)[/\\]|\.dockerenv\b|[\w-]*[._-](?:access|error)[._-]?log\b|(?:access|error)[._]log\b)",
    ),
    // Anything under `etc/`: configuration an attacker reads once outside the web root.
    r(
        "pt-etc",
        Class::PathTraversal,
        1,
        V | P,
        r"(?:^|[/\\])etc[/\\]+[\w.-]+",
    ),
    // An absolute system path as a whole value (`/etc/syslog.conf`, `C:\php\php.ini`).
    r(
        "pt-absolute-path",
        Class::PathTraversal,
        1,
        V,
        r"^\s*(?:[a-z]:)?[/\\]+(?:etc|proc|sys|dev|var|usr|boot|root|bin|sbin|lib|opt|srv|windows|winnt|inetpub|xampp|wamp|program\sfiles(?:\s\(x86\))?|apache\d*|apache\sgroup|php\d*|mysql|nginx|home[/\\]+[^/\\]+[/\\]+\.)(?:[/\\]|$)",
    ),
    r(
        "pt-drive-path",
        Class::PathTraversal,
        1,
        V | P,
        r"(?:^\s*|[/\\])[a-z]:[/\\]+(?:windows|winnt|inetpub|program\s?files|progra~1|documents\sand\ssettings|\$recycle\.bin|sysprep|minint|xampp|wamp|apache|php|mysql|perl|python|nginx|tomcat|jboss|iis|boot\.ini|system|sys|temp|htdocs|www|web|logs?|users[/\\]+(?:administrator|default|public|all\susers)[/\\]|[\w.-]+\.(?:ini|inf|conf|cfg|log|err|sys|dat|bak|config|xml|cnf))\b",
    ),
    // Paranoia 2: `~` home directories and any dot-dot pair in a value.
    r(
        "pt-dotdot-any",
        Class::PathTraversal,
        2,
        V,
        r"(?:^|[^.])\.\.(?:[^.]|$)[^\s]*[/\\]",
    ),
    // --- remote file inclusion and dangerous URL schemes -------------------------------------
    r(
        "rfi-scheme",
        Class::Rfi,
        1,
        V | H,
        r"(?:^|[^\w])(?:php|expect|phar|zip|glob|gopher|dict|jar|ldap|ldaps|tftp|file|data|ogg|rar|ssh2(?:\.\w+)?|compress\.(?:zlib|bzip2))://",
    ),
    r(
        "rfi-php-filter",
        Class::Rfi,
        1,
        V | H,
        r"php://(?:filter|input|fd|memory|temp)|convert\.(?:iconv|base64-(?:en|de)code|quoted-printable)|string\.rot13|zlib\.(?:in|de)flate",
    ),
    r(
        "rfi-ip-url",
        Class::Rfi,
        1,
        V,
        r"^\s*(?:https?|ftps?)://(?:[^/@]*@)?\d{1,3}\.\d{1,3}\.\d{1,3}\.\d{1,3}(?:[:/?#]|$)|(?:https?:)?//(?:\d{8,10}|0x[0-9a-f]{8}|0[0-7]{1,4}\.0[0-7]{0,4}\.)(?:[:/?#\x22'\s>]|$)",
    ),
    r(
        "rfi-trailing-query",
        Class::Rfi,
        1,
        V,
        r"^\s*(?:https?|ftps?)://[^?#\s]+\.(?:txt|php\d?|sh|pl|py|jsp|asp|aspx|cgi|inc|gif|jpg)\?+$",
    ),
    r(
        "rfi-url-value",
        Class::Rfi,
        3,
        V,
        r"^\s*(?:https?|ftps?)://[^?#\s]*\?$",
    ),
    // --- SQL injection backups (libinjection is the main engine) -----------------------------
    r(
        "sqli-union",
        Class::Sqli,
        1,
        V | H | P,
        r"\bunion(?:\s|\(|\+)+(?:all(?:\s|\(|\+)+|distinct(?:\s|\(|\+)+)?\(*\s*select(?:\s|\(|\+)*(?:\d|null\b|@|\*|'|\x22|0x|[a-z_][\w.$]*\s*(?:,|\bfrom\b|\(|\|\||\+|$))",
    ),
    r(
        "sqli-time",
        Class::Sqli,
        1,
        V | H,
        r"\b(?:sleep|pg_sleep|benchmark|randomblob|dbms_pipe\.receive_message|dbms_lock\.sleep)\s*\(\s*[\d'\x22(]|\bwaitfor\s+(?:delay|time)\s+'|\bgenerate_series\s*\(",
    ),
    r(
        "sqli-schema",
        Class::Sqli,
        1,
        V | H,
        r"\b(?:information_schema|mysql\.user|pg_(?:catalog|shadow|user|database)|sys\.(?:objects|tables|columns|databases|user_)|sysobjects|syscolumns|sqlite_master|all_tables|user_tables|msysobjects|dba_users|v\$version)\b",
    ),
    r(
        "sqli-functions",
        Class::Sqli,
        1,
        V | H,
        r"\bprocedure\s+analyse\s*\(|\b(?:load_file|extractvalue|updatexml|xp_cmdshell|sp_executesql|sp_oacreate|utl_http\.request|utl_inaddr|dbms_xmlgen|xmltype|into\s+(?:out|dump)file|group_concat|json_keys|make_set|exp\s*\(\s*~|name_const|geometrycollection|multipoint|polygon|linestring|st_latfromgeohash)\b\s*[\('\x22]?",
    ),
    r(
        "sqli-stacked",
        Class::Sqli,
        1,
        V | H,
        r"['\x22)]\s*;\s*(?:drop|alter|create|truncate|rename|insert|update|delete|exec(?:ute)?|declare|shutdown|select|grant|revoke|set|begin|waitfor|copy)\b",
    ),
    r(
        "sqli-tautology",
        Class::Sqli,
        1,
        V | H,
        r"['\x22`)]\s*(?:or|and|xor|\|\||&&|div|like|rlike|regexp|having|where|union|order|group|limit)\s+[\w'\x22(@][^<>]*?(?:=|<|>|\blike\b|\bis\b|\bin\b|\bbetween\b)|['\x22]\s*(?:or|and|\|\||&&)\s*['\x22]?\s*\d+\s*['\x22]?\s*(?:=|<|>)",
    ),
    r(
        "sqli-comment-end",
        Class::Sqli,
        1,
        V | H,
        r"(?:['\x22]\s*|\))(?:--[\s+-]*$|/\*|;\s*--|;%00|\x00)|\w['\x22]\)*\s*#\S{0,8}\s*$|\b(?:or|and)\s+\d+\s*(?:=|<|>)\s*\d+\s*(?:--|#|/\*)",
    ),
    r(
        "sqli-system-vars",
        Class::Sqli,
        1,
        V | H,
        r"@@(?:version|datadir|hostname|basedir|servername|identity|spid)\b|\bversion\s*\(\s*\)|\bdatabase\s*\(\s*\)|\bcurrent_user\b|\bsession_user\b|\bsystem_user\s*\(|\bchar\s*\(\s*\d+\s*(?:,\s*\d+\s*)+\)|\bchr\s*\(\s*\d+\s*\)\s*(?:\|\||\+)|\bconcat(?:_ws)?\s*\(\s*(?:0x|char|@@|'|\x22|\(?select)",
    ),
    // A value that starts by continuing a WHERE clause: `AND 1=1`, ` OR x=y#`, `HAVING 1=0--`,
    // `or true--`, `' or "`: what is appended to a number or a closed string.
    r(
        "sqli-boolean-prefix",
        Class::Sqli,
        1,
        V,
        r"^\s*['\x22)]*\s*(?:and|or|xor|having|&&|\|\|)\s+\(*\s*(?:not\s+)?(?:(?:\d+|true|false|null)\s*(?:(?:=|<>|!=|<=|>=|<|>)\s*\(*['\x22]?[\w%]*['\x22]?)?|['\x22]?[a-z_]\w*['\x22]?\s*(?:=|<>|!=|<=|>=|<|>|\blike\b)\s*\(*['\x22]?[\w%]*['\x22]?)\s*(?:$|--|#|/\*|;|\band\b|\bor\b|\bhaving\b)|^\s*['\x22]\s*(?:=\s*['\x22]?)?\s*or\s*['\x22]|^\s*\d+\s*-\s*(?:true|false)\s*$",
    ),
    // Statements other than queries: accounts, grants, DDL, backups, procedure calls.
    r(
        "sqli-statements",
        Class::Sqli,
        1,
        V | H,
        r"\b(?:grant|revoke)\s+[\w\s,]+?\s+(?:on|to|from)\s+[\w.\x60\x22\[\]]+|\bcreate\s+(?:user|login|table|database|procedure|function|trigger|view)\s+[\w.\x60\x22\[\]]+\s*(?:\(|identified\b|as\b|with\b|$|;)|\bbackup\s+(?:database|log)\s+\w+\s+to\b|\bexec(?:ute)?\s+(?:master\.\.)?(?:sp_|xp_)\w*|\bselect\s+@@\w+|['\x22]\s*\|\|\s*[\w.]+\s*\(",
    ),
    r(
        "sqli-order-by",
        Class::Sqli,
        1,
        V,
        r"^\s*\d*['\x22)]*\s*(?:order|group)\s+by\s+\d+|\b(?:and|or)\s+\d+\s*[=<>]\s*\d+\s*$|\bselect\s+(?:\*|[\w@(),.'\x22\s]+?)\s+from\s+[\w.\x60\x22\[\]]+\s*(?:$|where\b|limit\b|order\b|group\b|union\b|;|--|#|/\*|\))|\binsert\s+into\s+[\w.\x60\x22\[\]]+\s*(?:\(|values\b|select\b)|\bdelete\s+from\s+[\w.\x60\x22\[\]]+\s*(?:$|where\b|;|--|#)|\bdrop\s+(?:table|database|schema|user)\s+(?:if\s+exists\s+)?[\w.\x60\x22\[\]]+\s*(?:$|;|--|#|/\*)|\bupdate\s+[\w.\x60\x22\[\]]+\s+set\s+[\w.\x60\x22]+\s*=",
    ),
    r(
        "sqli-keywords-2",
        Class::Sqli,
        2,
        V,
        r"\b(?:select|union|insert|update|delete|drop|exec)\b[^a-z]{0,8}\b(?:from|select|into|table|where|xp_)\b|['\x22`]\s*(?:or|and)\b",
    ),
    // --- XSS backups (libinjection is the main engine) ---------------------------------------
    r(
        "xss-script-tag",
        Class::Xss,
        1,
        V | H | P,
        r"<\s*/?\s*script\b|<\s*/?\s*(?:iframe|frame|frameset|object|embed|applet|meta|base|link|svg|math|form|isindex|marquee|bgsound|layer|ilayer|xss|xml|import|template|portal|style|animate|set|handler|listener)\b",
    ),
    r(
        "xss-event-handler",
        Class::Xss,
        1,
        V | H | P,
        r"<[^>]*?[\s/'\x22\x60]on[a-z]{3,}\s*=|^\s*['\x22]?\s*>?\s*<?[^<>]*[\s/'\x22]on(?:error|load|mouseover|focus|click|begin|end|toggle|animationstart|pointerenter|start)\s*=",
    ),
    r(
        "xss-js-url",
        Class::Xss,
        1,
        V | H | P,
        r"(?:^|[\s'\x22=(:])(?:j\s*a\s*v\s*a|v\s*b)\s*s\s*c\s*r\s*i\s*p\s*t\s*:\s*[!-~]|\bdata\s*:\s*(?:text/html|application/(?:x-)?(?:javascript|xhtml)|image/svg)|\blivescript\s*:|\bmocha\s*:",
    ),
    r(
        "xss-dom-sinks",
        Class::Xss,
        1,
        V | H,
        r"\bdocument\s*\.\s*(?:cookie|domain|write|location)\b|\bwindow\s*\.\s*(?:location|open|name)\b|\.innerhtml\s*=|\bstring\s*\.\s*fromcharcode\b|\b(?:alert|prompt|confirm)\s*(?:\(|`|&#)|\beval\s*\(|\bsettimeout\s*\(\s*['\x22`]|\bexpression\s*\(|-moz-binding|\bbehavior\s*:|\bsrcdoc\s*=|\bformaction\s*=|\bxlink:href|\bconstructor\s*\.\s*constructor|\btop\s*\[|\bself\s*\[|\bfetch\s*\(|\batob\s*\(",
    ),
    // `<` spelt as a numeric entity or a JavaScript escape: only filter evasion writes it so.
    r(
        "xss-encoded-angle",
        Class::Xss,
        1,
        V | H,
        r"&#0*60;?|&#x0*3c;?|\\u0*3c|\\x3c|%u003c|\+adw-",
    ),
    // Tags no rich-text editor emits: document structure, forms, SVG shapes, XML and template
    // syntax, HTML comments (Word's `<!--StartFragment-->` excepted).
    r(
        "xss-non-richtext-tag",
        Class::Xss,
        1,
        V,
        r"<\s*/?\s*(?:input|textarea|button|select|option|keygen|datalist|output|head|html|body|title|xmp|plaintext|noscript|noembed|noframes|listing|circle|rect|ellipse|polygon|polyline|path|line|g|defs|feimage|fe[a-z]+|image|use|foreignobject|animate\w*|xsl:\w+|x:\w+|xss|svg:\w+|vmlframe|v:\w+)\b|<\?|<!\s*(?:doctype|entity|attlist|element|\[cdata\[)|<!--\s*(?:$|[^se\s-]|s(?:$|[^t])|e(?:$|[^n]))|\]\]>",
    ),
    // Script without tags: calls of the classic probes and DOM helpers.
    r(
        "xss-js-code",
        Class::Xss,
        1,
        V | H,
        r"\bfor\s*\([^)]*;[^)]*;[^)]*\)\s*\{|@(?:import|font-face|charset)\b|<!\[(?:if|endif)\b|^\s*-->|(?-i:PHNjcmlwd|PHN2Zy|PGltZy|PGlmcmFtZ|PGJvZHk|amF2YXNjcmlwdDo)|\(\s*(?:alert|prompt|confirm|eval)\s*\)|[=,;(]\s*(?:alert|prompt|confirm)\b|\bnavigator\s*\.\s*\w+\s*\(|\$\(\s*['\x22][^'\x22]*['\x22]\s*\)\s*\.\s*\w+\s*\(|\bfunction\s+\w*\s*\([^)]*\)\s*\{|\*\s*\{\s*[\w-]+\s*:",
    ),
    r(
        "xss-tag-2",
        Class::Xss,
        2,
        V,
        r"<\s*[a-z][\w-]*[^>]*\s(?:src|href|action|background|dynsrc|lowsrc|poster)\s*=\s*['\x22]?\s*(?:[^'\x22\s>]*:)",
    ),
    // --- paranoia 3 and 4: strict fields (identifiers, codes, numbers) -----------------------
    r(
        "sqli-keywords-3",
        Class::Sqli,
        3,
        V | H,
        r"\b(?:select|insert|update|delete|drop|union|exec|execute|declare|truncate|alter)\b.{0,40}\b(?:from|into|set|table|where|select|values|database)\b|['\x22`]\s*(?:[;)#]|--|\|\||&&)",
    ),
    r(
        "xss-any-tag-3",
        Class::Xss,
        3,
        V,
        r"<\s*[a-z][a-z0-9-]*(?:\s+[a-z-]+\s*=|\s*/?>)|<\s*/\s*[a-z][a-z0-9-]*\s*>",
    ),
    r(
        "cmdi-metachar-3",
        Class::CommandInjection,
        3,
        V,
        r"[;|`]\s*[a-z/.$]|\$\(|\$\{|&&\s*[a-z/.$]",
    ),
    r(
        "pt-dotdot-4",
        Class::PathTraversal,
        4,
        V | H,
        r"\.\.[/\\]|[/\\]\.\.",
    ),
    r(
        "proto-control-char-4",
        Class::Protocol,
        4,
        V | H,
        r"[\x00-\x08\x0b\x0c\x0e-\x1f\x7f]",
    ),
    r(
        "sqli-quote-4",
        Class::Sqli,
        4,
        V,
        r"['\x22`]\s*(?:[=<>+;,)(]|\b(?:or|and|xor|like|union|select|having)\b)",
    ),
    // --- protocol abuse ----------------------------------------------------------------------
    // CR/LF followed by a header line in a value: response splitting, header injection.
    r(
        "proto-crlf",
        Class::Protocol,
        1,
        V | H | P,
        r"[\r\n]\s*(?:[\w-]+\s*:|http/\d)|%0d|%0a",
    ),
    // Encodings no client produces and lenient decoders misread: `%%35%63`, overlong leads
    // before another escape (`%c0%2f`, `%c1%8s`), non-hex escapes chained (`%bg%qf`).
    r(
        "proto-evasive-encoding",
        Class::Protocol,
        1,
        V | P,
        r"%%[0-9a-f]{2}|%c[01]%[0-9a-z]{2}|%c[01]\.|%[0-9a-f][g-z]%[0-9a-z][g-z]|%(?:e0|f0|f8|fc)%80%|://(?:%[0-9a-f]{2}){3,}",
    ),
    // A request smuggled inside a value.
    r(
        "proto-smuggled-request",
        Class::Protocol,
        1,
        V | H,
        r"\b(?:get|post|put|delete|head|options|connect|trace)\s+/\S*\s+http/\d\.\d",
    ),
];

/// A shell separator (`;`, `|`, `||`, `&&`, backtick, `$(`) and an optional quote, then a command
/// (optionally with its `/bin/` path). Commands no prose uses (`whoami`, `wget`, `ipconfig`) may
/// take any argument; commands that are also words (`echo`, `find`, `type`, `cat`, `id`, `php`)
/// only count when they end the value or take shell-looking arguments (`-x`, `/path`, `$VAR`,
/// `%VAR%`, a number, a quote, a redirection), so "…; echo chamber" stays prose. A lone `&` is
/// not a separator at paranoia 1 ("Tom & Jerry").
const CMD_AFTER_SEPARATOR: &str = r"(?:[;|`]|&&|\$\(|\)\s*[;|])\s*['\x22]?\s*(?:/?usr/local/bin/|/?usr/bin/|/bin/|/?usr/sbin/|/sbin/)?(?:(?:net\s+(?:user|localgroup|view|share|use|group|start|stop|session|accounts|config)|reg\s+(?:add|query|delete|save|export|import))\b|(?:whoami|uname|wget|curl|ncat|netcat|nslookup|ifconfig|ipconfig|netstat|systeminfo|sysinfo|powershell|pwsh|cmd|cmd\.exe|certutil|bitsadmin|chmod|chown|tftp|telnet|nmap|tasklist|taskkill|hostname|base64|xterm|awk|gawk|printenv|usleep|mkfifo|killall|wmic|mshta|rundll32|regsvr32|cscript|wscript|xxd|crontab|useradd|netsh|pwd|ls|grep|zsh|ksh|csh)(?:\s*$|\s*[;|&`'\x22)<>]|\\[nr]|\s+[-/\\%$'\x22\w])|(?:id|cat|tac|nc|bash|sh|dash|python[23]?|perl|ruby|php|lua|node|ping|dig|sleep|echo|expr|rm|uptime|ps|kill|reg|net|ver|dir|type|del|find|head|tail|od|touch|sudo|shutdown|reboot|route|arp)(?:\s*$|\s*[;|&`'\x22)<>]|\\[nr]|\s+(?:[-/\\%$'\x22\d<>|&]|[a-z]:[/\\]|[\w.-]*[/\\.$%=])))";

/// The id of a known rule (or of an engine), as a `'static` string for findings.
pub fn rule_id(name: &str) -> Option<&'static str> {
    RULES
        .iter()
        .map(|r| r.id)
        .chain(super::ENGINE_RULES.iter().copied())
        .find(|id| *id == name)
}

/// The rules of one paranoia level, compiled per scope.
#[derive(Debug)]
pub struct Compiled {
    value: Set,
    header: Set,
    path: Set,
}

#[derive(Debug)]
struct Set {
    set: RegexSet,
    /// `(id, class)` of each pattern in `set`, by index.
    meta: Vec<(&'static str, Class)>,
}

/// A rule that matched.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Hit {
    pub rule: &'static str,
    pub class: Class,
}

impl Compiled {
    /// Compiles the rules on at `paranoia` (1..=4).
    pub fn new(paranoia: u8) -> Result<Self, regex::Error> {
        Ok(Self {
            value: Set::new(paranoia, V)?,
            header: Set::new(paranoia, H)?,
            path: Set::new(paranoia, P)?,
        })
    }

    /// Whether any rule of `scope` matches `text` (no allocation).
    pub fn is_match(&self, scope: Scope, text: &str) -> bool {
        self.set(scope).set.is_match(text.as_bytes())
    }

    fn set(&self, scope: Scope) -> &Set {
        match scope {
            Scope::Value => &self.value,
            Scope::Header => &self.header,
            Scope::Path => &self.path,
        }
    }

    /// Every rule of `scope` that matches `text`, in table order.
    pub fn matches(&self, scope: Scope, text: &str) -> impl Iterator<Item = Hit> + '_ {
        let set = self.set(scope);
        let m = set.set.matches(text.as_bytes());
        m.into_iter()
            .filter_map(move |i| set.meta.get(i).map(|&(rule, class)| Hit { rule, class }))
    }
}

impl Set {
    fn new(paranoia: u8, scope: u8) -> Result<Self, regex::Error> {
        let chosen: Vec<&Rule> = RULES
            .iter()
            .filter(|r| r.paranoia <= paranoia && r.scopes & scope != 0)
            .collect();
        // ASCII classes (`\w`, `\s`, `\b`, case folding) over bytes: Chinese text is never
        // taken for identifier characters (`drop table 怎么写` is not `drop table t`), and a
        // Unicode `\b` would make the lazy DFA give up on every non-ASCII value.
        let set = regex::bytes::RegexSetBuilder::new(chosen.iter().map(|r| r.pattern))
            .unicode(false)
            .case_insensitive(true)
            .size_limit(64 << 20)
            .dfa_size_limit(16 << 20)
            .build()?;
        Ok(Self {
            set,
            meta: chosen.iter().map(|r| (r.id, r.class)).collect(),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn first(c: &Compiled, scope: Scope, s: &str) -> Option<Class> {
        c.matches(scope, s).next().map(|h| h.class)
    }

    #[test]
    fn every_level_compiles_and_ids_are_unique() {
        for p in 1..=4 {
            Compiled::new(p).unwrap();
        }
        let mut ids: Vec<_> = RULES.iter().map(|r| r.id).collect();
        ids.sort_unstable();
        let n = ids.len();
        ids.dedup();
        assert_eq!(ids.len(), n);
    }

    #[test]
    fn classes() {
        let c = Compiled::new(1).unwrap();
        let v = Scope::Value;
        assert_eq!(first(&c, v, "../../etc/passwd"), Some(Class::PathTraversal));
        assert_eq!(first(&c, v, "..\\..\\boot.ini"), Some(Class::PathTraversal));
        assert_eq!(first(&c, v, "/etc/syslog.conf"), Some(Class::PathTraversal));
        assert_eq!(first(&c, v, "C:\\php\\php.ini"), Some(Class::PathTraversal));
        assert_eq!(first(&c, v, "; id"), Some(Class::CommandInjection));
        assert_eq!(first(&c, v, "a|uname -a"), Some(Class::CommandInjection));
        assert_eq!(first(&c, v, "$(whoami)"), Some(Class::CommandInjection));
        assert_eq!(first(&c, v, "netstat -an"), Some(Class::CommandInjection));
        assert_eq!(first(&c, v, "{{7*7}}"), Some(Class::CommandInjection));
        assert_eq!(first(&c, v, "php://filter/resource=x"), Some(Class::Rfi));
        assert_eq!(first(&c, v, "http://10.0.0.1/shell.txt"), Some(Class::Rfi));
        assert_eq!(
            first(&c, v, "http://evil.example/shell.txt?"),
            Some(Class::Rfi)
        );
        assert_eq!(first(&c, v, "1 UNION ALL SELECT null"), Some(Class::Sqli));
        assert_eq!(first(&c, v, "1' AND sleep(5)"), Some(Class::Sqli));
        assert_eq!(first(&c, v, "<svg/onload=alert(1)>"), Some(Class::Xss));
        assert_eq!(first(&c, v, "java\tscript:alert(1)"), Some(Class::Xss));
        assert_eq!(first(&c, v, "x\r\nSet-Cookie: a=b"), Some(Class::Protocol));
    }

    #[test]
    fn benign_values_pass_at_paranoia_1() {
        let c = Compiled::new(1).unwrap();
        for s in [
            "select a time slot",
            "O'Brien",
            "drop me a line",
            "Tom & Jerry; cats and dogs",
            "张三 北京市朝阳区建国路88号",
            "https://miniapp.example.gov.cn/pay/notify?from=wx&id=655699",
            "<p><strong>通知</strong><img src=\"https://cdn.example.gov.cn/a.png\"></p>",
            "eyJhbGciOiJIUzI1NiJ9.eyJzdWIiOiIxIn0.c2lnbmF0dXJl",
            "wait... / what?",
            "C++ 培训补贴",
            "how to update my e-mail?",
            "type of permit",
            "I'll echo that",
            "identity card",
            "/files/2024/06/IMG_20240601_123045.jpg",
        ] {
            let hits: Vec<_> = c.matches(Scope::Value, s).collect();
            assert!(hits.is_empty(), "{s}: {hits:?}");
        }
    }
}
