"""The two development libraries: which Debian packages, which music folders, which limits.

Each library is a tuple of games; a game is one Debian `main` package and the globs of its
music folders (relative to the extracted package, OUTDIR/x/<package>). Only music folders are
named: sound effects, voices and ambience never are. layout.py reads this table; build.sh asks
`layout.py --library N --packages` what to download.
"""
from __future__ import annotations

from dataclasses import dataclass, field


@dataclass(frozen=True)
class Game:
    label: str
    package: str
    music: tuple[str, ...]  # globs relative to OUTDIR/x/<package>
    exclude: tuple[str, ...] = field(default=())  # fnmatch patterns on the same relative path
    # (zip inside the package, fnmatch pattern on its member names): the matching members are
    # unpacked to <zip>.d/<member> beside the zip, where the music globs can name them.
    unzip: tuple[tuple[str, str], ...] = field(default=())


@dataclass(frozen=True)
class Library:
    games: tuple[Game, ...]
    min_per_game: int  # a game left with fewer tracks is dropped
    max_per_game: int = 40  # seeded choice above this
    min_games: int = 8  # the build fails with fewer games
    min_seconds: float = 45.0  # shorter files are not tracks


# Library 1: ten games from Debian bookworm (README.md, "Library 1").
GAMES_1 = (
    Game("hedgewars", "hedgewars-data", ("usr/share/games/hedgewars/Data/Music/*",)),
    Game(
        "supertux",
        "supertux-data",
        ("usr/share/games/supertux2/music/*/*",),
        # The same recording as flare's fantasycore/music/battle_theme.ogg (not byte-identical;
        # spectral cross-correlation 0.84 at lag 0, next cross-game pair < 0.37). Kept once,
        # under flare: supertux has more tracks than the cap anyway.
        exclude=("*/music/misc/battle_theme.ogg",),
    ),
    Game("openclonk", "openclonk-data", ("usr/share/games/openclonk/Music.ocg/*",)),
    Game(
        "flare",
        "flare-game",
        ("usr/share/games/flare/mods/fantasycore/music/*",),
        exclude=("*/wind_ambient.ogg",),  # a mono wind-noise loop, not music
    ),
    Game("freedroidrpg", "freedroidrpg-data", ("usr/share/freedroidrpg/data/sound/music/*",)),
    Game(
        "megaglest",
        "megaglest-data",
        (
            "usr/share/games/megaglest/data/core/menu/music/*",
            "usr/share/games/megaglest/techs/megapack/factions/*/music/*",
        ),
    ),
    # blobwars names its ogg files without an extension: the format is read from the content.
    Game("blobwars", "blobwars-data", ("usr/share/games/blobwars/music/*",)),
    Game("starfighter", "starfighter-data", ("usr/share/starfighter/music/*",)),
    Game(
        "mars",
        "marsshooter-data",
        (
            "usr/share/games/marsshooter/audio/music/*",
            "usr/share/games/marsshooter/audio/menu.ogg",
            "usr/share/games/marsshooter/audio/tutorial.ogg",
        ),
    ),
    # Fish Fillets: 22.05 kHz mono files (the other games are 44.1/48 kHz stereo).
    Game("fillets", "fillets-ng-data", ("usr/share/games/fillets-ng/music/*",)),
)


STK = "usr/share/games/supertuxkart/data"
ZERO_AD_ZIP = "usr/share/games/0ad/mods/public/public.zip"

# Library 2: eight more games from Debian bookworm (README.md, "Library 2"). The other packages
# checked for it hold fewer than 5 music tracks of 45 s or more; README.md lists them.
GAMES_2 = (
    # 0 A.D. keeps its data in one 3.3 GB zip; only audio/music/* (stored, not compressed) is
    # unpacked. The folder also holds album.png, which is not audio.
    Game("0ad", "0ad-data", (ZERO_AD_ZIP + ".d/audio/music/*",), unzip=((ZERO_AD_ZIP, "audio/music/*"),)),
    Game(
        "supertuxkart",
        "supertuxkart-data",
        (
            f"{STK}/music/*.ogg",
            # Music that a track's own .music file names (the rest of those folders is effects
            # and a voice). Not tracks/cave/beneath_the_rabbit_hole.ogg: it is byte-identical
            # to library 1's supertux music/forest/beneath_the_rabbit_hole.ogg (near_dupes.py
            # across both libraries: 0.90 at lag 0), and library 1 stays as it is.
            f"{STK}/tracks/ancient_colosseum_labyrinth/Battle_Theme_1.ogg",
            f"{STK}/tracks/battleisland/Gran_Paradiso_Unused_-_TuxKart_5a_Gowns_Bow_Remix.ogg",
            f"{STK}/tracks/introcutscene2/intro2.ogg",
        ),
        # The `fast-filename` of a .music file: the same tune sped up for the last lap.
        exclude=("*/music/*_fast.ogg", "*/music/farm_f.ogg"),
    ),
    Game("widelands", "widelands-data", ("usr/share/games/widelands/data/music/*.ogg",)),
    Game("neverball", "neverball-common", ("usr/share/games/neverball/bgm/*",)),
    Game("xmoto", "xmoto-data", ("usr/share/games/xmoto/Textures/Musics/*",)),
    Game("extremetuxracer", "extremetuxracer-data", ("usr/share/games/etr/music/*",)),
    Game("btanks", "btanks-data", ("usr/share/games/btanks/data/tunes/*",)),
    # Sound/ mixes music (.ogg and .mid) with effects (.wav): only the .ogg files are taken.
    Game("freedink", "freedink-data", ("usr/share/games/dink/dink/Sound/*.ogg",)),
)

LIBRARIES = {
    1: Library(GAMES_1, min_per_game=8),
    2: Library(GAMES_2, min_per_game=5, max_per_game=64),
}
