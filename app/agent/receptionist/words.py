"""The receptionist's vocabulary: word lists and patterns that sort what a caller says.

Fillers, function, number and command words (never a request, reason or name), the words that are
not names, and the phrases for goodbye, yes/no, questions, "say again", "wait", "stop", refusals,
"a real person" and call-backs; plus the regexes for name intros and reasons.
"""

from __future__ import annotations

import re


def _set(text: str) -> frozenset[str]:
    return frozenset(text.split())


_FILLERS = _set(
    "um umm uhm uh uhh er erm ah ahh eh hm hmm hmmm mm mmm mhm huh oh ooh ow well like so okay ok alright "
    "right yeah yes yep yup ya yah no nope nah hi hello hey hiya please thanks thank cheers sorry pardon "
    "excuse oops wow whoa great cool fine sure good nice lovely perfect bye goodbye maybe perhaps probably "
    "actually basically anyway"
)
_FUNCTION = _set(
    "a an the and or but nor if then than so to of in on at by for with without from about as into onto "
    "upon up down out off over under again just also too very really quite only even still yet here there "
    "this that these those it its it's that's there's here's what's who's is are was were be been being am "
    "do does did done doing have has had having can could will would shall should may might must "
    "i i'm i've i'd i'll me my mine myself you you're you've you'd you'll your yours yourself we we're "
    "we've us our ours they they're them their he he's him his she she's her it'd let's "
    "what when where who whom whose why how which whatever whoever "
    "not don't doesn't didn't can't cannot couldn't won't wouldn't isn't aren't wasn't weren't haven't "
    "hasn't hadn't shouldn't ain't never nothing none nobody nowhere anything something everything "
    "someone somebody anyone anybody everyone everybody some any all every each both either neither "
    "other another same such own more most less least much many few lot lots bit kind sort way thing "
    "things stuff yes no"
)
_NUMBERS = _set(
    "zero oh one two three four five six seven eight nine ten eleven twelve thirteen fourteen fifteen "
    "sixteen seventeen eighteen nineteen twenty thirty forty fifty sixty seventy eighty ninety hundred "
    "thousand million first second third"
)
_COMMANDS = _set(
    "stop stopped wait waiting hold hang ask asked asking tell told say said saying says repeat listen "
    "listening hear heard hearing talk talked talking speak speaking spoke go going gone went get "
    "getting got give giving gave let see saw look looking know knowing knew think thinking thought "
    "want wanted wanting need needed needing like liked call called calling phone phoning ring ringing "
    "try trying tried come coming came make making made take taking took put keep mean meant help "
    "helping leave leaving left wanna gonna gotta shut quiet end understand understood message"
)
_JUNK = _FILLERS | _FUNCTION | _NUMBERS | _COMMANDS
"""Words that carry no request or reason on their own."""

_CORE = _JUNK - {"will", "may"}
"""Never a name, even announced and capitalised ("my name is Will" is a name)."""

_NOT_NAMES = _JUNK | _set(
    "urgent important busy ready late early new old happy sad sick ill tired confused lost available "
    "free correct wrong true false maybe probably definitely actually basically honestly literally "
    "seriously anyway anyways today tomorrow yesterday tonight morning afternoon evening night now "
    "later soon before after already always sometimes bad interested hoping wondering worried "
    "messages appointment appointments question questions problem problems issue issues name number "
    "phone line time hours hour minute minutes moment seconds day days week weeks office reception "
    "receptionist person people human operator agent representative manager someone somebody robot "
    "machine computer real live actual monday tuesday wednesday thursday friday saturday sunday "
    "calling looking here back home again billing invoice booking bookings payment refund delivery order "
    "cancellation prescription cleaning checkup emergency insurance account complaint quote repair results "
    "ridiculous crazy stupid weird strange annoying terrible awful horrible silly funny boring difficult "
    "hard easy simple impossible amazing awesome obvious private personal nobody's mine open opened opening "
    "closed close closing mr mrs ms miss mx dr doctor prof professor"
)
"""Common words that are not names when they stand alone or after a weak intro ("it's urgent")."""

_NOT_NAME_ENDINGS = ("ous", "ful", "able", "ible", "less", "ical", "ness", "ment")
_TITLES = _set("mr mrs ms miss mx dr doctor prof professor")
_AFTER_NAME = _set("from here speaking calling and with at again")  # "John from Acme", "Maria speaking"

_GOODBYE = (
    "goodbye",
    "good bye",
    "bye",
    "bye bye",
    "that's all",
    "that is all",
    "that's it",
    "that's everything",
    "that's enough",
    "hang up",
    "end the call",
    "end call",
    "nothing else",
    "never mind",
    "nevermind",
    "forget it",
    "i'm done",
    "i am done",
    "we're done",
    "i have to go",
    "i've got to go",
    "i got to go",
    "gotta go",
    "have a good day",
    "have a nice day",
    "talk to you later",
    "speak to you later",
    "see you",
)
_YES = (
    "yes",
    "yeah",
    "yep",
    "yup",
    "ya",
    "correct",
    "right",
    "that's right",
    "that is right",
    "that's it",
    "sure",
    "absolutely",
    "exactly",
    "affirmative",
    "ok",
    "okay",
    "perfect",
    "mm hmm",
    "uh huh",
    "mhm",
    "yes please",
    "sounds good",
    "it is",
    "that is",
    "you got it",
    "got it",
    "spot on",
    "all good",
    "good",
    "great",
    "fine",
    "lovely",
    "brilliant",
    "indeed",
    "definitely",
    "of course",
    "certainly",
    "please do",
)
_NO = (
    "no",
    "nope",
    "nah",
    "not quite",
    "wrong",
    "incorrect",
    "that's wrong",
    "not right",
    "not correct",
    "that's not",
    "that isn't",
    "not really",
    "not exactly",
    "is not",
    "isn't",
    "it's not",
    "not it",
)
_TIME = ("what time is it", "what's the time", "what is the time", "the time", "time is it")
_HOURS = ("hours", "open", "opening", "close", "closing", "closed", "opens", "closes")
_QUESTION_WORDS = (
    "what",
    "when",
    "who",
    "whose",
    "are you",
    "do you",
    "is it",
    "is this",
    "how late",
    "how long",
    "until",
    "tell me",
    "like to know",
    "want to know",
    "need to know",
)
_WHO = (
    "who are you",
    "who is this",
    "who's this",
    "who am i speaking",
    "who am i talking",
    "your name",
    "a robot",
    "a bot",
    "a machine",
    "a computer",
    "an ai",
    "a recording",
    "automated",
    "are you human",
    "are you a human",
    "are you a person",
    "are you a real",
    "are you real",
)
_ARE_YOU_HUMAN = ("are you human", "are you a human", "are you a person", "are you a real", "are you real")
_REPEAT = (
    "what",
    "what was that",
    "what did you say",
    "sorry",
    "sorry what",
    "pardon",
    "pardon me",
    "excuse me",
    "come again",
    "say that again",
    "say again",
    "repeat that",
    "repeat",
    "can you repeat",
    "could you repeat",
    "please repeat",
    "i didn't hear",
    "i didn't catch",
    "didn't catch that",
    "i can't hear you",
    "huh",
)
_PAUSE = (
    "wait",
    "hold on",
    "hang on",
    "one moment",
    "one second",
    "one sec",
    "a moment",
    "a second",
    "a sec",
    "a minute",
)
_PAUSE_WORDS = _set(
    "wait hold hang on one a moment second sec minute just please stop sorry ok okay oh um uh er hey no "
    "give me let sure yes yeah there right so hmm hm ah i need to get find grab pen paper it check while "
    "little bit look for my moment"
)
_STOP_WORDS = _set(
    "stop please just now it talking that ok okay oh so you can could will would right there all the call "
    "this shut up be quiet enough no i said hey calling me"
)
_REFUSE = (
    "rather not",
    "prefer not",
    "don't want to say",
    "don't want to give",
    "don't want to tell",
    "not telling",
    "won't say",
    "won't tell",
    "not going to say",
    "not going to tell",
    "none of your business",
    "anonymous",
    "no name",
    "doesn't matter",
    "does not matter",
    "not important",
    "skip",
    "no thanks",
    "no thank you",
)
_HUMAN_WORDS = r"(?:person|human|humans|operator|agent|representative|people|staff)"
_WANTS_PERSON = [
    re.compile(r"\b(?:speak|talk|chat)\s+(?:to|with)\s+(?!you\b)"),  # not "talk to you later"
    re.compile(r"\b(?:put|transfer|connect)\s+(?:me|us|my call|this call|the call)\b"),
    re.compile(
        r"\b(?:want|need|like|get|give me|prefer|is there|can i have|let me have)\s+"
        r"(?:(?:a|an|the|to|me|real|live|actual|proper|please|some|another)\s+){0,3}" + _HUMAN_WORDS + r"\b"
    ),
    re.compile(r"\b(?:real|live|actual)\s+(?:person|human|people|agent|operator)\b"),
    re.compile(r"\bhuman being\b"),
]
_PERSON_ONLY = _set("operator agent human representative person a an please the real live customer service i want need")
_PERSON_KEY = _set("operator agent human representative person")
_CALLBACK = re.compile(r"\bcall (?:me |us )?back\b|\bcallback\b|\bring (?:me |us )?back\b")
_GREETING_ONLY = _set("hi hello hey hiya good morning afternoon evening there anyone anybody is")
_THANKS_ONLY = _set(
    "thanks thank you that's great perfect lovely cheers ok okay alright brilliant very much so wonderful "
    "excellent good fine cool awesome that's it all"
)
_PLAIN_YES = _set("yes yeah yep yup ya sure ok okay please")

_INTRO = re.compile(
    r"\b(my name is|my name's|name's|the name is|name is|you can call me|call me|this is|it's|its|it is|i'm|i am)\s+",
    re.IGNORECASE,
)
_STRONG_INTROS = frozenset(
    {"my name is", "my name's", "name's", "the name is", "name is", "you can call me", "call me"}
)
_REASON_INTRO = re.compile(
    r"\b(?:i'm calling|i am calling|calling|it's|it is|this is|i'm phoning|i'm ringing)?\s*"
    r"(?:about|regarding|because|in regards to|with regard to|concerning)\s+(.+)",
    re.IGNORECASE,
)
_REASON_TO = re.compile(
    r"\b(?:i'd like|i would like|i want|i wanted|i need|i'm calling|i am calling|i'm phoning|i'm ringing|"
    r"i was hoping|i'm hoping|i'm trying|i am trying|i have|i've got|calling)\s+to\s+([a-z]+)\b(.*)",
    re.IGNORECASE,
)
_NOT_A_REASON_VERB = _set("leave speak talk chat know be get hear say tell ask go")
_REASON_PREFIX = re.compile(
    r"^(?:i'm calling|i am calling|i'm phoning|i'm ringing|i was calling|i'd like|i would like|i want|i wanted|"
    r"i need|i was hoping|i'm hoping|i'm trying|i am trying|i have|i've got|can i|could i|may i)\s+(?:to\s+)?",
    re.IGNORECASE,
)
_FILLER = re.compile(
    r"^(?:(?:um+|uh+|er+|erm|hmm+|mm+|ah+|well|so|oh|hi|hello|hey|yes|yeah|okay|ok|sure|right|alright)[,.!]?\s+)+",
    re.IGNORECASE,
)
_HALLUCINATIONS = frozenset(
    {"you", "thanks for watching", "thank you for watching", "please subscribe", "subtitles by the amara org community"}
)
