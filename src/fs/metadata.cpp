#include "fs/metadata.hpp"
