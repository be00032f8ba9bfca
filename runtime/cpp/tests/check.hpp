/*
 * A minimal test harness for the C++ runtime's tests (no third-party framework): CHECK records a
 * failure and goes on, CHECK_THROWS expects an exception type whose message contains a text.
 */
#ifndef LOCORE_TESTS_CHECK_HPP
#define LOCORE_TESTS_CHECK_HPP

#include <cstdio>
#include <exception>
#include <functional>
#include <string>
#include <vector>

namespace locore_test
{

inline int& failures()
{
    static int count = 0;
    return count;
}

inline void fail(char const* file, int line, std::string const& what)
{
    ++failures();
    if (failures() <= 50)
    {
        std::fprintf(stderr, "%s:%d: FAILED: %s\n", file, line, what.c_str());
    }
}

template <typename Exception>
bool throws_with(std::function<void()> const& body, std::string const& text, std::string& got)
{
    try
    {
        body();
    }
    catch (Exception const& exc)
    {
        got = exc.what();
        return got.find(text) != std::string::npos;
    }
    catch (std::exception const& exc)
    {
        got = std::string("another exception: ") + exc.what();
        return false;
    }
    got = "no exception";
    return false;
}

//! Records a failure (with `what`) unless `ok`; for tests that name each check in words.
inline void check(bool ok, std::string const& what)
{
    if (!ok)
    {
        ++failures();
        std::fprintf(stderr, "FAIL: %s\n", what.c_str());
    }
}

//! Runs `body`, expecting an exception of type E whose message contains every one of `parts`.
template <typename E>
void expect_throw(std::function<void()> const& body, std::vector<std::string> const& parts,
                  std::string const& what)
{
    try
    {
        body();
    }
    catch (E const& error)
    {
        std::string message = error.what();
        for (std::string const& part : parts)
        {
            check(message.find(part) != std::string::npos,
                  what + ": message lacks '" + part + "': " + message);
        }
        return;
    }
    catch (std::exception const& error)
    {
        check(false, what + ": wrong exception type: " + error.what());
        return;
    }
    check(false, what + ": no exception");
}

} // namespace locore_test

#define CHECK(cond)                                                                                \
    do                                                                                             \
    {                                                                                              \
        if (!(cond))                                                                               \
        {                                                                                          \
            ::locore_test::fail(__FILE__, __LINE__, #cond);                                        \
        }                                                                                          \
    } while (0)

#define CHECK_MSG(cond, msg)                                                                       \
    do                                                                                             \
    {                                                                                              \
        if (!(cond))                                                                               \
        {                                                                                          \
            ::locore_test::fail(__FILE__, __LINE__, std::string(#cond) + ": " + (msg));            \
        }                                                                                          \
    } while (0)

#define CHECK_THROWS(Exception, text, ...)                                                         \
    do                                                                                             \
    {                                                                                              \
        std::string got_;                                                                          \
        if (!::locore_test::throws_with<Exception>([&] { __VA_ARGS__; }, text, got_))              \
        {                                                                                          \
            ::locore_test::fail(__FILE__, __LINE__,                                                \
                                std::string("expected " #Exception " containing \"") + (text) +    \
                                    "\", got: " + got_);                                           \
        }                                                                                          \
    } while (0)

#endif // LOCORE_TESTS_CHECK_HPP
